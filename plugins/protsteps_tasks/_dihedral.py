r"""Masked dihedral prediction: recover the backbone angles of residues whose angles were hidden.

Why this task: phi and psi fix the local fold of the backbone (helix, strand, turn); hiding
a residue's own angles and asking for them back forces the encoder to read them from the
neighbours' geometry, the way masked-token prediction does for sequences.

Masking: per protein, :math:`m = \max(\lfloor f L \rfloor, m_{\min})` residues (``f = 0.15``,
:math:`m_{\min} = 2` as in STEPS) are drawn uniformly among the residues with phi or psi
defined, and all their angles are removed from the encoder's input by clearing
``dihedral_input_mask`` (encoders zero the angle encoding there).

Loss, on the masked residues' defined angles :math:`\alpha` only:

- ``periodic`` (default): the head predicts :math:`(s, c)` per angle; with
  :math:`\hat\alpha = \operatorname{atan2}(s, c)`,
  :math:`\ell = 1 - \cos(\hat\alpha - \alpha) = 1 - (s \sin\alpha + c \cos\alpha)/\lVert(s, c)\rVert`.
  It is 0 for a perfect prediction, 2 for the opposite angle, and smooth across
  :math:`\pm\pi` (179° and -179° are 2° apart).
- ``paper``: a tanh head regresses :math:`\alpha/\pi` (the released code's degrees/180) with
  mean squared error; it treats 179° and -179° as 358° apart.

``masking = "paper"`` reproduces the released code, which read undefined angles as 0 (its
NaN -> 0): the masked residues are drawn among *all* residues, every other residue shows
the encoder its phi and psi with undefined ones as 0, and the masked residues' undefined
angles are scored against a target of 0.

The metric ``mae_deg`` is the mean absolute angular error in **degrees**, wrapped to
[0, 180], over the same angles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from protsteps import BuildContext, EncoderOutput, PretextTask, TaskOutput, option
from protsteps.graph import Batch

from ._distance import _encoder_dim, refuse_non_finite

__all__ = ["DihedralConfig", "DihedralTask", "mask_residues", "angular_error"]

Objective = Literal["periodic", "paper"]
Masking = Literal["defined", "paper"]

#: columns of phi and psi in ``dihedrals``
_PHI_PSI = [0, 1]


@dataclasses.dataclass
class DihedralConfig:
    """Settings of the ``dihedral`` task."""

    mask_fraction: float = option(0.15, "Fraction of each protein's residues whose angles are hidden.")
    min_masked: int = option(2, "At least this many residues are masked per protein.")
    objective: Objective = option(
        "periodic", "periodic: sin/cos with loss 1 - cos(error); paper: tanh regression of angle/pi with MSE."
    )
    masking: Masking = option(
        "defined",
        "defined: mask and score residues with phi or psi defined; paper: the released code, "
        "undefined angles read as 0 (shown to the encoder, scored as target 0).",
    )
    head_hidden: int = option(
        0, "Hidden width of the head MLP (0: encoder width / 10, as in the paper).", minimum=0, maximum=16_384
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_fraction <= 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1], got {self.mask_fraction}")
        if self.min_masked < 0:
            raise ValueError(f"min_masked must be >= 0, got {self.min_masked}")
        if self.mask_fraction == 0.0 and self.min_masked == 0:
            raise ValueError("mask_fraction = 0 and min_masked = 0 would mask nothing")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0, got {self.head_hidden}")


def mask_residues(
    batch: Batch,
    fraction: float = 0.15,
    minimum: int = 2,
    generator: torch.Generator | None = None,
    defined_only: bool = True,
) -> Tensor:
    """Choose residues to mask: ``[M] long`` indices into the batch's residues, sorted.

    Per protein of length :math:`L`, :math:`\\max(\\lfloor f L \\rfloor, \\text{minimum})`
    residues, capped by the number of residues with phi or psi defined, drawn uniformly
    without replacement among those (among all residues, capped by :math:`L`, with
    ``defined_only=False``). One random key per residue (from ``generator``, on the
    CPU) and a sort by (protein, key) do it for the whole batch at once.
    """
    n = batch.num_nodes
    if defined_only:
        eligible = (batch.dihedral_mask[:, _PHI_PSI].any(dim=1)).cpu()
    else:
        eligible = torch.ones(n, dtype=torch.bool)
    protein = batch.batch.cpu()
    lengths = batch.lengths.cpu()
    wanted = torch.clamp(torch.floor(lengths.double() * fraction).long(), min=minimum)
    available = torch.zeros(batch.num_graphs, dtype=torch.long).index_add_(0, protein, eligible.long())
    count = torch.minimum(wanted, available)
    key = torch.rand(n, generator=generator, dtype=torch.float64)
    key = torch.where(eligible, key, torch.full_like(key, 2.0))
    order = torch.argsort(protein.double() * 4.0 + key)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - batch.ptr.cpu()[protein[order]]
    chosen = rank < count[protein]
    return torch.nonzero(chosen).flatten().to(batch.device)


def angular_error(predicted: Tensor, target: Tensor) -> Tensor:
    """``|predicted - target|`` wrapped to [0, π] (radians), elementwise."""
    difference = torch.remainder(predicted - target + math.pi, 2 * math.pi) - math.pi
    return difference.abs()


class DihedralTask(PretextTask):
    """The ``dihedral`` task: hide the angles of some residues, predict phi and psi back.

    ``corrupt`` returns the batch with ``dihedral_input_mask`` cleared on the masked residues
    (a new tensor; the caller's batch is unchanged) and their indices as state;
    ``forward`` returns the loss and the metrics ``mae_deg`` (mean absolute angular error in
    degrees) and ``angles`` (how many angles were scored).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"dihedrals"})

    def __init__(self, config: DihedralConfig, context: BuildContext) -> None:
        super().__init__()
        self.config = config
        dim = _encoder_dim(context, "dihedral")
        hidden = config.head_hidden or max(dim // 10, 1)
        outputs = 4 if config.objective == "periodic" else 2
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, outputs)]
        if config.objective == "paper":
            layers.append(nn.Tanh())
        self.head = nn.Sequential(*layers)

    def corrupt(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, Tensor]:
        paper = self.config.masking == "paper"
        masked = mask_residues(
            batch, self.config.mask_fraction, self.config.min_masked, generator, defined_only=not paper
        )
        visible = batch.dihedral_input_mask.clone()
        if paper:
            # undefined angles are shown (as 0), as the released code did
            visible[:, _PHI_PSI] |= ~batch.dihedral_mask[:, _PHI_PSI]
        visible[masked] = False
        return batch.replace(dihedral_input_mask=visible), masked

    def predict(self, node: Tensor) -> Tensor:
        """``[M, 2]`` predicted (phi, psi) in radians from residue embeddings ``[M, d]``."""
        out = self.head(node)
        if self.config.objective == "paper":
            return out * math.pi
        pairs = out.view(-1, 2, 2)
        return torch.atan2(pairs[..., 0], pairs[..., 1])

    def forward(self, batch: Batch, output: EncoderOutput, state: Any = None) -> TaskOutput:
        if not isinstance(state, Tensor):
            raise TypeError("DihedralTask.forward needs the masked residue indices returned by corrupt()")
        masked = state
        defined = batch.dihedral_mask[masked][:, _PHI_PSI]
        if self.config.masking == "paper":
            defined = torch.ones_like(defined)  # undefined angles are scored as 0
        if int(defined.sum()) == 0:
            return TaskOutput(loss=output.node.sum() * 0.0, metrics={"mae_deg": 0.0, "angles": 0})
        node = output.node[masked]
        known = batch.dihedral_mask[masked][:, _PHI_PSI]
        target = torch.where(known, batch.dihedrals[masked][:, _PHI_PSI], 0.0).to(node.dtype)
        scored = defined.bool()
        refuse_non_finite(
            batch, target[scored], batch.batch[masked][:, None].expand_as(scored)[scored], "dihedral", "angle"
        )
        out = self.head(node)
        weight = defined.to(node.dtype)
        if self.config.objective == "periodic":
            pairs = out.view(-1, 2, 2)
            norm = pairs.norm(dim=-1).clamp_min(1e-6)
            cosine = (pairs[..., 0] * torch.sin(target) + pairs[..., 1] * torch.cos(target)) / norm
            per_angle = 1.0 - cosine
            predicted = torch.atan2(pairs[..., 0], pairs[..., 1])
        else:
            per_angle = (out - target / math.pi).square()
            predicted = out * math.pi
        loss = (per_angle * weight).sum() / weight.sum()
        error = angular_error(predicted.detach(), target)
        mae_deg = torch.rad2deg((error * weight).sum() / weight.sum())
        return TaskOutput(loss=loss, metrics={"mae_deg": mae_deg, "angles": int(defined.sum())})
