r"""Segment reductions along dimension 0: sum, mean and max.

For ``src: [M, ...]`` and ``index: [M] long`` with values in ``[0, dim_size)``,

.. math::

    \mathrm{out}_s = \bigoplus_{m : \mathrm{index}_m = s} \mathrm{src}_m

with :math:`\oplus` one of sum, mean or max. Empty segments give 0 for every reduction.
All three are differentiable in ``src``; the gradient of ``max`` goes to the maximal
element of each segment.

torch-scatter is used when it is importable (it is an optional extra: a source build);
otherwise native ``index_add_`` / ``scatter_reduce_``. Both give the same results (tested).
Set the environment variable ``PROTSTEPS_SCATTER=native`` to force the native path.

Message passing with weighted edges, :math:`\mathrm{out}_i = \sum_{e:\, t_e = i} w_e\, h_{s_e}`
for edges :math:`(s_e, t_e)`, is the product of ``h`` with the sparse weighted adjacency matrix
:math:`A_{ts} = \sum_{e:\,(s_e, t_e) = (s, t)} w_e`. :class:`WeightedAdjacency` builds
:math:`A` once per graph batch in compressed-row form and multiplies (``"sparse"``), which
never materialises the ``[E, d]`` messages that gathering and scattering (``"scatter"``) does:
on CPU it is 10-20x faster at widths 40-1,280 (``benchmarks/gin_aggregation.py``). The
environment variable ``PROTSTEPS_AGGREGATION=scatter`` forces the gather-scatter path.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .precision import autocast_off

__all__ = [
    "Aggregation",
    "WeightedAdjacency",
    "aggregation",
    "backend",
    "scatter",
    "scatter_max",
    "scatter_mean",
    "scatter_sum",
]

Reduce = Literal["sum", "mean", "max"]
Backend = Literal["torch_scatter", "native"]
Aggregation = Literal["sparse", "scatter"]


@functools.lru_cache(maxsize=1)
def _torch_scatter_available() -> bool:
    try:
        import torch_scatter  # noqa: F401
    except Exception:  # ImportError, or an ABI mismatch with the installed torch
        return False
    return True


def backend() -> Backend:
    """The backend :func:`scatter` uses by default on this machine."""
    if os.environ.get("PROTSTEPS_SCATTER", "").lower() == "native":
        return "native"
    return "torch_scatter" if _torch_scatter_available() else "native"


def _expand_index(index: Tensor, src: Tensor) -> Tensor:
    return index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)


def _native(src: Tensor, index: Tensor, dim_size: int, reduce: Reduce) -> Tensor:
    shape = (dim_size, *src.shape[1:])
    if reduce == "sum":
        return src.new_zeros(shape).index_add_(0, index, src)
    if reduce == "mean":
        total = src.new_zeros(shape).index_add_(0, index, src)
        count = torch.bincount(index, minlength=dim_size).clamp_(min=1).to(src.dtype)
        return total / count.view(-1, *([1] * (src.dim() - 1)))
    if reduce == "max":
        return src.new_zeros(shape).scatter_reduce(
            0, _expand_index(index, src), src, reduce="amax", include_self=False
        )
    raise ValueError(f"unknown reduction {reduce!r}; use 'sum', 'mean' or 'max'")


def _with_torch_scatter(src: Tensor, index: Tensor, dim_size: int, reduce: Reduce) -> Tensor:
    import torch_scatter

    if reduce == "sum":
        return torch_scatter.scatter_add(src, index, dim=0, dim_size=dim_size)
    if reduce == "mean":
        return torch_scatter.scatter_mean(src, index, dim=0, dim_size=dim_size)
    if reduce == "max":
        return torch_scatter.scatter_max(src, index, dim=0, dim_size=dim_size)[0]
    raise ValueError(f"unknown reduction {reduce!r}; use 'sum', 'mean' or 'max'")


def scatter(
    src: Tensor,
    index: Tensor,
    dim_size: int | None = None,
    reduce: Reduce = "sum",
    *,
    use: Backend | None = None,
) -> Tensor:
    """Reduce the rows of ``src: [M, ...]`` into ``[dim_size, ...]`` by ``index: [M] long``.

    ``dim_size`` defaults to ``index.max() + 1``; pass it explicitly when trailing segments
    may be empty. ``use`` picks a backend for this call (default: :func:`backend`).
    """
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(
            f"index must be [M] with M = src.shape[0] = {src.shape[0]}, got {tuple(index.shape)}"
        )
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    chosen = use or backend()
    if chosen == "torch_scatter":
        if not _torch_scatter_available():
            raise RuntimeError(
                "torch-scatter is not installed: pip install --no-build-isolation torch-scatter"
            )
        return _with_torch_scatter(src, index, dim_size, reduce)
    return _native(src, index, dim_size, reduce)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Segment sum; see :func:`scatter`."""
    return scatter(src, index, dim_size, "sum")


def scatter_mean(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Segment mean (0 for empty segments); see :func:`scatter`."""
    return scatter(src, index, dim_size, "mean")


def scatter_max(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Segment max (0 for empty segments); see :func:`scatter`."""
    return scatter(src, index, dim_size, "max")


# ------------------------------------------------------------------ weighted message passing

#: devices whose torch build multiplies a compressed-row sparse matrix with a dense one
_SPARSE_DEVICES = frozenset({"cpu", "cuda"})


def aggregation(device: torch.device | None = None) -> Aggregation:
    """The path :class:`WeightedAdjacency` takes by default: ``"sparse"`` on CPU and CUDA,
    ``"scatter"`` on other devices or when ``PROTSTEPS_AGGREGATION=scatter`` is set."""
    if os.environ.get("PROTSTEPS_AGGREGATION", "").lower() == "scatter":
        return "scatter"
    if device is not None and device.type not in _SPARSE_DEVICES:
        return "scatter"
    return "sparse"


#: keys below this sort as unsigned 16-bit integers: numpy sorts those with a radix sort
_RADIX_BOUND = 1 << 16


def stable_argsort(keys: Tensor, bound: int) -> Tensor:
    """``torch.argsort(keys, stable=True)`` for integer ``keys`` in ``[0, bound)``.

    On CPU, keys that fit in 16 bits go through numpy's stable sort of ``uint16``, a radix
    sort, and keys below :math:`2^{32}` through two such passes (low half, then high half:
    a least-significant-digit radix sort, stable because each pass is): the same
    permutation, about 7x faster than torch's merge sort on the ~30,000 edges of a batch
    (0.21 against 1.7 ms here). Elsewhere, or with larger keys, ``torch.argsort``."""
    if keys.device.type != "cpu" or keys.numel() < 2 or bound > 1 << 32:
        return torch.argsort(keys, stable=True)
    values = keys.numpy()
    if bound <= _RADIX_BOUND:
        order = np.argsort(values.astype(np.uint16), kind="stable")
    else:
        order = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
        order = order[np.argsort((values[order] >> 16).astype(np.uint16), kind="stable")]
    return torch.from_numpy(order)


def _compressed_rows(
    rows: Tensor, columns: Tensor, values: Tensor, shape: tuple[int, int], rows_sorted: bool
) -> Tensor:
    """``shape`` sparse CSR matrix with ``values[e]`` at ``(rows[e], columns[e])`` (duplicates
    add up when multiplied). Its indices are int32 when they fit: MKL and cuSPARSE multiply
    with int32 indices, and torch converts int64 ones again at every product."""
    if not rows_sorted:
        order = stable_argsort(rows, shape[0])
        rows, columns, values = rows[order], columns[order], values[order]
    fits = max(*shape, rows.numel()) < torch.iinfo(torch.int32).max
    index_dtype = torch.int32 if fits else torch.int64
    crow = torch.zeros(shape[0] + 1, dtype=index_dtype, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0, dtype=index_dtype, out=crow[1:])
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta state": the matrix-times-dense product used
        # here is tested against the gather-scatter path (tests/core/test_scatter.py)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, columns.to(index_dtype), values, shape, check_invariants=False)


class WeightedAdjacency:
    r"""The weighted adjacency matrix of a graph batch, applied to node states.

    For ``edge_index: [2, E] long`` (row 0 the source, row 1 the target of each edge),
    ``weight: [E] float`` and ``h: [N, d]``, ``adjacency @ h`` is ``[T, d]`` (``T`` targets,
    by default ``T = N``) with

    .. math::

        (A h)_i = \sum_{e:\, t_e = i} w_e\, h_{s_e},

    the same as ``scatter(weight[:, None] * h[source], target, T, "sum")``, up to float
    rounding (the sums run in another order). Build it once per batch and apply it in every
    layer: the compressed-row matrix is made on first use per dtype, its transpose (for the
    gradient) only when a gradient reaches ``h``. :meth:`aggregate` adds a multiple of ``h``
    itself in the same pass (GIN's self term); :meth:`pair_difference` builds the operator
    ``h -> h[first] - h[second]``.

    Parameters
    ----------
    edge_index: ``[2, E] long``, any order; sorted by target (as ``residue_graph`` writes
        them) saves a sort.
    weight: ``[E] float``. A weight that requires a gradient is honoured by taking the
        ``"scatter"`` path, which is differentiable in it.
    num_nodes: N, the rows of the node states it is applied to.
    method: ``"sparse"`` (compressed-row matrix product) or ``"scatter"`` (gather the sources,
        scale, sum into the targets); default :func:`aggregation` for the weight's device.
    num_targets: T, the rows of the result (default N).

    Examples
    --------
    >>> edge_index = torch.tensor([[1, 2, 0], [0, 0, 2]])
    >>> adjacency = WeightedAdjacency(edge_index, torch.tensor([0.5, 2.0, 1.0]), 3)
    >>> adjacency @ torch.tensor([[1.0], [10.0], [100.0]])
    tensor([[205.],
            [  0.],
            [  1.]])
    """

    def __init__(
        self,
        edge_index: Tensor,
        weight: Tensor,
        num_nodes: int,
        method: Aggregation | None = None,
        *,
        num_targets: int | None = None,
    ) -> None:
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or weight.shape != edge_index.shape[1:]:
            raise ValueError(
                f"edge_index must be [2, E] and weight [E], got {tuple(edge_index.shape)} "
                f"and {tuple(weight.shape)}"
            )
        self.source, self.target = edge_index[0], edge_index[1]
        self.weight = weight
        self.num_nodes = num_nodes
        self.num_targets = num_nodes if num_targets is None else num_targets
        chosen = method or aggregation(weight.device)
        self.method: Aggregation = "scatter" if weight.requires_grad else chosen
        self._matrices: dict[tuple[torch.dtype, bool], Tensor] = {}

    @classmethod
    def pair_difference(
        cls,
        first: Tensor,
        second: Tensor,
        num_nodes: int,
        dtype: torch.dtype | None = None,
        method: Aggregation | None = None,
    ) -> WeightedAdjacency:
        r"""The operator :math:`h \mapsto h_{\mathrm{first}_p} - h_{\mathrm{second}_p}`, ``[N, d]
        -> [P, d]``, for ``first, second: [P] long`` node indices: two edges into each pair,
        of weights 1 and -1. Its product gives ``h[first] - h[second]`` exactly (the same
        float operations); its gradient is one sparse product instead of two scatters into
        ``[N, d]`` zeros.

        Examples
        --------
        >>> d = WeightedAdjacency.pair_difference(torch.tensor([2, 0]), torch.tensor([0, 0]), 3)
        >>> d @ torch.tensor([[1.0], [10.0], [100.0]])
        tensor([[99.],
                [ 0.]])
        """
        if first.shape != second.shape or first.dim() != 1:
            raise ValueError(
                f"first and second must both be [P], got {tuple(first.shape)} and {tuple(second.shape)}"
            )
        pairs = first.shape[0]
        sources = torch.stack([first, second], dim=1).reshape(-1)
        targets = torch.arange(pairs, device=first.device).repeat_interleave(2)
        signs = torch.tensor([1.0, -1.0], dtype=dtype or torch.get_default_dtype(), device=first.device)
        return cls(torch.stack([sources, targets]), signs.repeat(pairs), num_nodes, method, num_targets=pairs)

    def matrix(self, dtype: torch.dtype, transposed: bool = False) -> Tensor:
        r""":math:`A` (``[T, N]``, or :math:`A^\top`) as a sparse CSR tensor of ``dtype``."""
        key = (dtype, transposed)
        if key not in self._matrices:
            values = self.weight.detach().to(dtype)
            if transposed:
                rows, columns = self.source, self.target
                shape = (self.num_nodes, self.num_targets)
            else:
                rows, columns = self.target, self.source
                shape = (self.num_targets, self.num_nodes)
            rows_sorted = bool(rows.numel() < 2 or (rows[1:] >= rows[:-1]).all())
            self._matrices[key] = _compressed_rows(rows, columns, values, shape, rows_sorted)
        return self._matrices[key]

    def _check_rows(self, h: Tensor) -> None:
        if h.shape[0] != self.num_nodes:
            raise ValueError(f"expected {self.num_nodes} rows of node states, got {tuple(h.shape)}")

    def __matmul__(self, h: Tensor) -> Tensor:
        self._check_rows(h)
        if self.method == "scatter":
            weight = self.weight.to(h.dtype).view(-1, *([1] * (h.dim() - 1)))
            messages = weight * h[self.source]
            return scatter(messages, self.target, self.num_targets, "sum", use="native")
        flat = h.reshape(self.num_nodes, -1)
        return _AdjacencyProduct.apply(flat, self, False).reshape(self.num_targets, *h.shape[1:])

    def aggregate(self, h: Tensor, self_weight: Tensor | float = 1.0) -> Tensor:
        r"""``self_weight * h + A @ h``, :math:`c\, h_i + \sum_{e:\, t_e = i} w_e\, h_{s_e}` (GIN's
        :math:`(1 + \epsilon) h_i + \sum_j w_{ij} h_j`), for a square adjacency.

        On the sparse path this is one product that adds :math:`c\,h` as it writes (``addmm``
        with ``beta = c`` on CPU) instead of a product, a scaling and a sum over ``[N, d]``;
        its gradient is the same operation with :math:`A^\top`, and ``self_weight`` may be a
        0-d tensor that requires a gradient (:math:`\partial/\partial c = \langle h,
        \mathrm{grad}\rangle`). Gradients of gradients work as for ``@``.
        """
        if self.num_targets != self.num_nodes:
            raise ValueError(
                f"aggregate needs a square adjacency, this one maps {self.num_nodes} nodes to "
                f"{self.num_targets} targets"
            )
        self._check_rows(h)
        if self.method == "scatter":
            return self_weight * h + self @ h
        weight = torch.as_tensor(self_weight, device=h.device)
        if not weight.is_floating_point():
            weight = weight.to(h.dtype)
        flat = h.reshape(self.num_nodes, -1)
        return _SelfAndNeighbourSum.apply(flat, weight, self, False).reshape(h.shape)


def _sparse_product(
    adjacency: WeightedAdjacency, h: Tensor, transposed: bool, self_weight: Tensor | None = None
) -> Tensor:
    """``A @ h`` (``A^T @ h`` if ``transposed``) plus ``self_weight * h`` when given, for
    ``h: [rows, d]``, without autograd (the callers' autograd functions handle that)."""
    # under autocast (``[train] precision``) the product runs in float32 and returns h's
    # dtype: CPU has no bfloat16/float16 sparse CSR product, and the neighbour sums are
    # more exact in float32 anyway
    dtype = torch.float32 if h.dtype in (torch.bfloat16, torch.float16) else h.dtype
    with autocast_off():
        x = h.to(dtype).contiguous()
        matrix = adjacency.matrix(dtype, transposed)
        if x.shape[1] == 0 or adjacency.source.numel() == 0:
            out = x.new_zeros(matrix.shape[0], x.shape[1])
            if self_weight is not None:
                out = out + self_weight.to(dtype) * x
        elif x.device.type == "cpu":
            # ``matrix @ x`` zero-fills its result and copies it around MKL's product; addmm
            # with beta = 0 into an empty tensor (whose contents beta = 0 ignores, NaN
            # included) or with beta = c onto h writes the same values in one pass
            if self_weight is None:
                out = torch.empty(matrix.shape[0], x.shape[1], dtype=dtype)
                torch.addmm(out, matrix, x, beta=0, out=out)
            else:
                out = torch.addmm(x, matrix, x, beta=float(self_weight))
        else:
            out = matrix @ x
            if self_weight is not None:
                out = out + self_weight.to(dtype) * x
    return out.to(h.dtype)


class _AdjacencyProduct(torch.autograd.Function):
    """``A @ h`` whose gradient ``A^T @ grad`` is again this function, so that gradients of
    gradients (``create_graph=True``) work too.

    ``forward`` takes ``ctx`` itself (no ``setup_context``), as does every autograd function
    here: with a ``setup_context``, ``Function.apply`` binds the arguments through
    ``inspect.signature`` at every call, about 45 µs on this project's CPU, some twenty times
    a step. None of them is used under ``torch.func`` transforms (``vmap``, ``grad``), which
    would need one."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, adjacency: WeightedAdjacency, transposed: bool) -> Tensor:  # type: ignore[override]
        ctx.adjacency, ctx.transposed = adjacency, transposed
        return _sparse_product(adjacency, h, transposed)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _AdjacencyProduct.apply(grad, ctx.adjacency, not ctx.transposed), None, None


class _SelfAndNeighbourSum(torch.autograd.Function):
    """``c h + A h`` (:meth:`WeightedAdjacency.aggregate`). Its gradient in ``h`` is again this
    function with :math:`A^\\top`, in ``c`` the sum of ``h * grad``: both differentiable, so
    gradients of gradients work too."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: Tensor, self_weight: Tensor, adjacency: WeightedAdjacency, transposed: bool
    ) -> Tensor:
        ctx.adjacency, ctx.transposed = adjacency, transposed
        ctx.save_for_backward(h if ctx.needs_input_grad[1] else None, self_weight)
        return _sparse_product(adjacency, h, transposed, self_weight)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        h, self_weight = ctx.saved_tensors
        grad_h = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_h = _SelfAndNeighbourSum.apply(grad, self_weight, ctx.adjacency, not ctx.transposed)
        if ctx.needs_input_grad[1]:
            # one pass, no [N, d] temporary
            grad_weight = torch.dot(h.reshape(-1), grad.reshape(-1).to(h.dtype)).to(self_weight.dtype)
        return grad_h, grad_weight, None, None
