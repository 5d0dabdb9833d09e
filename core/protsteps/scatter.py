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
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import torch
from torch import Tensor

__all__ = ["scatter", "scatter_sum", "scatter_mean", "scatter_max", "backend"]

Reduce = Literal["sum", "mean", "max"]
Backend = Literal["torch_scatter", "native"]


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
