r"""Pairwise distance prediction: which 5 Å bin is the CA-CA distance of two residues in?

Why this task: distances between residues far apart in sequence are what a structure
encoder must capture beyond local geometry, and a classification over bins is robust to the
long tail of large distances. STEPS predicts the bin of :math:`d_{ij}` from

.. math::

    e_{ij} = (z_i - z_j) \odot (z_i - z_j), \qquad
    p(\text{bin} \mid i, j) = \mathrm{softmax}\big(W_2\, \mathrm{ReLU}(W_1 e_{ij} + b_1) + b_2\big),

with bins :math:`\lfloor \min(d_{ij}, 150 - \epsilon) / 5 \rfloor` (30 bins over [0, 150) Å,
the last one catching everything beyond) and a cross-entropy loss. The released code scored
all :math:`L^2` pairs, materialising an :math:`L^2 \times d` tensor (about 5 GB at 1,000
residues); here a fixed number of pairs is drawn per protein, so memory and time are
:math:`O(\text{pairs} \times d)` whatever the chain length. Pairs are drawn uniformly
among the ordered pairs :math:`(i, j)` with :math:`|i - j| \ge` ``min_separation`` (in chain
order); with ``min_separation = 0`` that is the paper's distribution over all :math:`L^2`
pairs, diagonal included, and its expected loss is the paper's loss. ``num_pairs = 0``
scores every pair instead, exactly as the released code (memory :math:`O(L^2 d)` again).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from protsteps import BuildContext, EncoderOutput, PretextTask, TaskOutput, option
from protsteps.errors import CompositionError
from protsteps.graph import Batch
from protsteps.optim import NonFiniteLossError
from protsteps.scatter import WeightedAdjacency

__all__ = ["DistanceConfig", "DistanceTask", "ResiduePairs", "sample_residue_pairs", "distance_bins"]

PairFeature = Literal["squared_difference", "concat", "sum_and_squared_difference"]


@dataclasses.dataclass
class DistanceConfig:
    """Settings of the ``distance`` task."""

    num_pairs: int = option(
        256,
        "Residue pairs drawn per protein and step; 0: every pair, as the released code (memory O(L^2 d)).",
    )
    min_separation: int = option(
        1,
        "Only pairs with |i - j| >= this in chain order (0: all L^2 pairs, diagonal included, as in the paper).",
    )
    num_bins: int = option(
        30, "Distance bins (the last one also holds every longer distance).", minimum=2, maximum=10_000
    )
    bin_width: float = option(5.0, "Width of a bin (Å); the paper used 30 bins of 5 Å over [0, 150).")
    pair_feature: PairFeature = option(
        "sum_and_squared_difference",
        "Pair input to the head: (z_i - z_j)^2 (paper), [z_i ; z_j], or [z_i + z_j ; (z_i - z_j)^2] (order-free).",
    )
    head_hidden: int = option(
        0, "Hidden width of the head MLP (0: encoder width / 10, as in the paper).", minimum=0, maximum=16_384
    )

    def __post_init__(self) -> None:
        if self.num_pairs < 0:
            raise ValueError(f"num_pairs must be >= 0 (0: every pair), got {self.num_pairs}")
        if self.min_separation < 0:
            raise ValueError(f"min_separation must be >= 0, got {self.min_separation}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        if self.bin_width <= 0:
            raise ValueError(f"bin_width must be positive, got {self.bin_width}")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0, got {self.head_hidden}")


@dataclasses.dataclass
class ResiduePairs:
    """Residue pairs of a batch: ``first``, ``second``: [P] long indices into the batch's
    residues (both of the same protein)."""

    first: Tensor
    second: Tensor


def sample_residue_pairs(
    batch: Batch,
    num_pairs: int,
    min_separation: int = 0,
    generator: torch.Generator | None = None,
) -> ResiduePairs:
    """Draw ``num_pairs`` ordered residue pairs per protein, uniformly (with replacement)
    among the pairs ``(i, j)`` of the same protein with ``|i - j| >= min_separation``;
    ``num_pairs = 0`` returns every such pair instead (row-major in ``(i, j)``).

    The separation :math:`s = |i - j|` is drawn with weight :math:`L - s` (doubled for
    :math:`s > 0`, which has two orders), then :math:`\\min(i, j)` uniformly, then the order.
    Proteins without such a pair (``L <= min_separation``) get none. Cost
    :math:`O(L_{max} + \\text{num\\_pairs})` per protein, drawn for the whole batch in one
    pass (one row of separation weights per protein). Randomness comes only from ``generator``
    (a CPU generator); the indices are returned on the batch's device.
    """
    lengths = batch.lengths.cpu()
    starts = batch.ptr[:-1].cpu()
    kept = lengths > max(min_separation, 0)
    if not bool(kept.any()):
        empty = torch.zeros(0, dtype=torch.long, device=batch.device)
        return ResiduePairs(empty, empty.clone())
    lengths, starts = lengths[kept], starts[kept]
    if num_pairs == 0:
        return _every_pair(lengths.tolist(), starts.tolist(), min_separation, batch.device)
    # all proteins at once: row b holds protein b's separations (weight 0 past its length)
    length = lengths.to(torch.float64)[:, None]
    separation = torch.arange(min_separation, int(lengths.max()), dtype=torch.float64)
    weight = (length - separation).clamp_min_(0.0) * torch.where(separation > 0, 2.0, 1.0)
    s = min_separation + torch.multinomial(weight, num_pairs, replacement=True, generator=generator)
    span = lengths[:, None] - s
    low = (torch.rand(s.shape, generator=generator, dtype=torch.float64) * span).long()
    low = torch.minimum(low, span - 1)
    high = low + s
    swap = torch.rand(s.shape, generator=generator) < 0.5
    first = starts[:, None] + torch.where(swap, high, low)
    second = starts[:, None] + torch.where(swap, low, high)
    return ResiduePairs(first.reshape(-1).to(batch.device), second.reshape(-1).to(batch.device))


def _every_pair(
    lengths: list[int], starts: list[int], min_separation: int, device: torch.device
) -> ResiduePairs:
    """Every ordered pair ``(i, j)`` with ``|i - j| >= min_separation`` of each protein,
    row-major in ``(i, j)``, protein after protein."""
    firsts: list[Tensor] = []
    seconds: list[Tensor] = []
    for start, length in zip(starts, lengths, strict=True):
        i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
        keep = (i - j).abs() >= min_separation
        firsts.append(start + i[keep])
        seconds.append(start + j[keep])
    return ResiduePairs(torch.cat(firsts).to(device), torch.cat(seconds).to(device))


def distance_bins(distance: Tensor, num_bins: int = 30, bin_width: float = 5.0) -> Tensor:
    """``[P] long`` bin index ``floor(d / bin_width)``, clamped to ``num_bins - 1``."""
    return torch.clamp(torch.div(distance, bin_width, rounding_mode="floor"), 0, num_bins - 1).long()


def refuse_non_finite(batch: Batch, values: Tensor, protein: Tensor, task: str, what: str) -> None:
    """Raise :class:`~protsteps.optim.NonFiniteLossError` naming the chains of ``batch``
    (``protein``: the protein index of each of ``values``) where ``values`` is not finite."""
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return
    chains = sorted(set(protein[bad].tolist()))
    names = [f"{batch.sources[i]}:{batch.chain_ids[i]}" for i in chains]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    raise NonFiniteLossError(
        f"task '{task}': non-finite {what} target ({int(bad.sum())} of {values.numel()}) in {shown}; "
        "featurize with the geometry checks on (max_coordinate, min_ca_spread, min_ca_ca) to refuse such chains"
    )


def _encoder_dim(context: BuildContext, task: str) -> int:
    if context.encoder_dim is None or context.encoder_dim < 1:
        raise CompositionError(
            f"task '{task}' needs the encoder's embedding width (BuildContext.encoder_dim) to build its head"
        )
    return context.encoder_dim


class _Square(torch.autograd.Function):
    """``x * x`` with the gradient ``grad * x * 2`` (the same values as torch's ``square``,
    whose backward goes through ``pow(x, 1)``: on CPU about ten times the time of two
    multiplications); differentiable again for gradients of gradients. ``forward`` takes
    ``ctx`` (no ``setup_context``: see :class:`protsteps.scatter._AdjacencyProduct`)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return torch.mul(grad, x).mul_(2.0)


class DistanceTask(PretextTask):
    """The ``distance`` task: classify sampled residue pairs into CA-CA distance bins.

    ``corrupt`` leaves the batch unchanged and draws the pairs (state: :class:`ResiduePairs`);
    ``forward`` returns the cross-entropy and the metrics ``accuracy`` (fraction of pairs in
    the right bin) and ``pairs`` (how many were scored).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"pos"})

    def __init__(self, config: DistanceConfig, context: BuildContext) -> None:
        super().__init__()
        self.config = config
        dim = _encoder_dim(context, "distance")
        in_dim = dim if config.pair_feature == "squared_difference" else 2 * dim
        hidden = config.head_hidden or max(dim // 10, 1)
        self.head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, config.num_bins))

    def corrupt(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, ResiduePairs]:
        return batch, sample_residue_pairs(
            batch, self.config.num_pairs, self.config.min_separation, generator
        )

    def pair_features(self, node: Tensor, pairs: ResiduePairs) -> Tensor:
        """``[P, d]`` (squared difference) or ``[P, 2d]`` head inputs of the pairs from
        ``node: [N, d]``."""
        first, second = node[pairs.first], node[pairs.second]
        if self.config.pair_feature == "squared_difference":
            return (first - second).square()
        if self.config.pair_feature == "concat":
            return torch.cat([first, second], dim=-1)
        return torch.cat([first + second, (first - second).square()], dim=-1)

    def logits(self, node: Tensor, pairs: ResiduePairs) -> Tensor:
        r"""``[P, num_bins]`` scores of the pairs from ``node: [N, d]``:
        ``head(pair_features(node, pairs))`` up to float rounding, without building the
        ``[P, 2d]`` pair features.

        The head's first layer is linear, so on :math:`[z_i + z_j \,;\, (z_i - z_j)^2]` it is
        :math:`U z_i + U z_j + V (z_i - z_j)^2 + b`: :math:`U z` is taken once per residue
        (``[N, hidden]``) and gathered per pair, and :math:`z_i - z_j` is one sparse product
        (:meth:`~protsteps.scatter.WeightedAdjacency.pair_difference`, exactly the same
        values), whose gradient is one sparse product too instead of two scatters of
        ``[P, d]`` rows; its square's gradient is two multiplications (:class:`_Square`).
        ``concat`` is :math:`U z_i + V z_j + b` the same way.
        """
        first_layer = self.head[0]
        if not isinstance(first_layer, nn.Linear):
            return self.head(self.pair_features(node, pairs))
        weight, bias = first_layer.weight, first_layer.bias
        width = node.shape[1]
        feature = self.config.pair_feature
        if feature != "squared_difference":
            # The halves of the weight are copied out (a few KB): the gradient of a product
            # with a contiguous matrix's transpose is computed as grad^T @ x ([hidden, P] x
            # [P, d]), with a strided slice's as x^T @ grad ([d, P] x [P, hidden]), which MKL
            # runs at half the speed for a narrow hidden width (0.78 against 0.39 ms at
            # P = 2,048); the values are the same
            left, right = weight[:, :width].contiguous(), weight[:, width:].contiguous()
        if feature == "concat":
            own, other = node @ left.T, torch.addmm(bias, node, right.T)
            hidden = own[pairs.first] + other[pairs.second]
        else:
            difference = (
                WeightedAdjacency.pair_difference(pairs.first, pairs.second, node.shape[0], node.dtype) @ node
            )
            if feature == "squared_difference":
                hidden = nn.functional.linear(_Square.apply(difference), weight, bias)
            else:
                own = node @ left.T
                hidden = torch.addmm(own[pairs.first] + own[pairs.second], _Square.apply(difference), right.T)
                hidden = hidden + bias
        for layer in list(self.head)[1:]:
            hidden = layer(hidden)
        return hidden

    def targets(self, batch: Batch, pairs: ResiduePairs) -> Tensor:
        """``[P] long`` distance bins of the pairs; a non-finite distance (a coordinate that
        is NaN, infinite or so large that the distance overflows) raises
        :class:`~protsteps.optim.NonFiniteLossError` naming the chain, before any bin is
        indexed with it."""
        distance = (batch.pos[pairs.first] - batch.pos[pairs.second]).norm(dim=-1)
        refuse_non_finite(batch, distance, batch.batch[pairs.first], "distance", "CA-CA distance")
        return distance_bins(distance, self.config.num_bins, self.config.bin_width)

    def forward(self, batch: Batch, output: EncoderOutput, state: Any = None) -> TaskOutput:
        if not isinstance(state, ResiduePairs):
            raise TypeError("DistanceTask.forward needs the ResiduePairs returned by corrupt()")
        if state.first.numel() == 0:
            # keeps the loss attached to the graph so a step on such a batch is a no-op
            return TaskOutput(loss=output.node.sum() * 0.0, metrics={"accuracy": 0.0, "pairs": 0})
        logits = self.logits(output.node, state)
        target = self.targets(batch, state)
        loss = nn.functional.cross_entropy(logits, target)
        accuracy = (logits.detach().argmax(dim=-1) == target).float().mean()
        return TaskOutput(loss=loss, metrics={"accuracy": accuracy, "pairs": int(target.numel())})
