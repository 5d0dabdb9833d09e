"""Masked residue-type prediction on residue graphs."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from protsteps import Batch, BuildContext, EncoderOutput, PretextTask, TaskOutput, option
from protsteps.errors import CompositionError
from protsteps.graph import UNKNOWN_RESIDUE


@dataclasses.dataclass
class ResidueTypeConfig:
    mask_fraction: float = option(0.15, "Fraction of residues whose type is hidden (shown as X).")

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in (0, 1), got {self.mask_fraction}")


class ResidueTypeTask(PretextTask):
    """Hide the type of a random fraction of residues and predict it back.

    Why: it makes the encoder infer a residue's identity from its structural neighbourhood,
    the graph analogue of masked language modelling. With a teacher the sequence reaches the
    encoder through the teacher's features, so the task is only meaningful without one.
    """

    requires = frozenset({"residue_type"})

    def __init__(self, config: ResidueTypeConfig, context: BuildContext) -> None:
        super().__init__()
        if context.encoder_dim is None:
            # a composition that cannot work: protsteps' own error, printed as this one line
            raise CompositionError("task 'residue_type' needs the encoder's width (context.encoder_dim)")
        self.config = config
        self.head = nn.Linear(context.encoder_dim, UNKNOWN_RESIDUE)

    def corrupt(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, Any]:
        draw = torch.rand(batch.num_nodes, generator=generator).to(batch.device)
        masked = draw < self.config.mask_fraction
        if not masked.any():
            masked[int(draw.argmin())] = True
        hidden = torch.where(masked, torch.full_like(batch.residue_type, UNKNOWN_RESIDUE), batch.residue_type)
        return batch.replace(residue_type=hidden), (masked, batch.residue_type)

    def forward(self, batch: Batch, output: EncoderOutput, state: Any = None) -> TaskOutput:
        masked, target = state
        scored = masked & (target != UNKNOWN_RESIDUE)
        if not scored.any():
            zero = output.node.sum() * 0.0
            return TaskOutput(loss=zero, metrics={"accuracy": 0.0, "scored": 0})
        logits = self.head(output.node[scored])
        loss = F.cross_entropy(logits, target[scored])
        accuracy = (logits.argmax(-1) == target[scored]).float().mean()
        return TaskOutput(loss=loss, metrics={"accuracy": accuracy.detach(), "scored": int(scored.sum())})
