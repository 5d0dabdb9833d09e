"""What downstream work runs: a backbone (encoder + featurizer + frozen teacher) and a head.

A :class:`Backbone` comes from a pretrain run (:func:`load_backbone` with a run folder or
an ``encoder.pt``) or is built untrained from a run config (the from-scratch baseline): the
same registry, the same featurizer, the same teacher setting, only the weights differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..components import Encoder, EncoderOutput, Teacher
from ..errors import ProtstepsError
from ..export import encoder_record, load_pretrained, require_encoder
from ..extensions import HeadContext
from ..graph import Batch, ProteinGraph, collate
from ..model import compose
from ..registry import Catalog
from ..runconfig import RunConfig

__all__ = [
    "Backbone",
    "ClassificationHead",
    "load_backbone",
    "scratch_backbone",
    "batches_of",
    "encode",
    "mlp_head",
    "linear_head",
]


class ClassificationHead(nn.Module):
    """An MLP on the pooled protein embedding that returns plain logits.

    ``LayerNorm(d) -> Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, C)``
    (``hidden = 0``: ``LayerNorm -> Linear(d, C)``, a linear probe).

    The logits are not squashed: the authors' classifier put a tanh before the
    cross-entropy, which caps every logit to [-1, 1] and so the confidence it can express.

    Parameters
    ----------
    in_dim: d, the width of the protein embedding.
    num_classes: C.
    hidden: width of the hidden layer (0: none).
    dropout: dropout before the last layer.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_dim, self.num_classes, self.hidden, self.dropout = in_dim, num_classes, hidden, dropout
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        if hidden > 0:
            layers += [
                nn.Linear(in_dim, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            ]
        else:
            layers += [nn.Dropout(dropout), nn.Linear(in_dim, num_classes)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, embedding: Tensor) -> Tensor:
        """``embedding: [B, d]`` -> logits ``[B, C]``."""
        return self.mlp(embedding)

    def describe(self) -> dict[str, Any]:
        return {
            "in_dim": self.in_dim,
            "num_classes": self.num_classes,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }


def mlp_head(context: HeadContext) -> ClassificationHead:
    """The ``mlp`` head: :class:`ClassificationHead` with ``[finetune] head_hidden`` hidden
    units (0: a linear probe) and ``head_dropout``."""
    return ClassificationHead(context.in_dim, context.num_classes, context.hidden, context.dropout)


def linear_head(context: HeadContext) -> ClassificationHead:
    """The ``linear`` head: ``LayerNorm -> Dropout -> Linear(d, C)`` whatever ``head_hidden``
    says (the linear probe of representation-learning papers)."""
    return ClassificationHead(context.in_dim, context.num_classes, 0, context.dropout)


@dataclasses.dataclass
class Backbone:
    """An encoder with what it needs to see new proteins.

    encoder: the encoder (pretrained weights, or freshly initialised).
    teacher: the frozen teacher, or ``None``.
    featurizer: ``{"name", "config"}`` of the featurizer the encoder expects.
    record: an ``encoder.pt`` record of this architecture (its ``state_dict`` is replaced
        when the weights are saved).
    origin: where it came from, for summaries (a path, or ``none (from scratch)``).
    notes: what was decided while building it (teacher ``auto`` -> ...).
    """

    encoder: Encoder
    teacher: Teacher | None
    featurizer: dict[str, Any]
    record: dict[str, Any]
    origin: str
    notes: list[str] = dataclasses.field(default_factory=list)

    def to(self, device: torch.device) -> Backbone:
        self.encoder.to(device)
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def teacher_description(self) -> str:
        if self.teacher is None:
            return "none"
        describe = getattr(self.teacher, "describe", None)
        return describe() if callable(describe) else str(self.record["teacher"]["name"])

    def export(self) -> dict[str, Any]:
        """The ``encoder.pt`` record of the current weights."""
        return {
            **self.record,
            "state_dict": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
        }


def load_backbone(
    path: str | Path,
    catalog: Catalog | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Backbone:
    """The encoder of a pretrain run folder (or an ``encoder.pt``) with its featurizer and
    teacher. ``settings``: the locations the file does not decide, per kind
    (``{"teacher": {"cache_dir": "/scratch/trunks"}}``, see
    :func:`protsteps.export.load_pretrained`)."""
    pretrained = load_pretrained(Path(path), catalog, settings=settings)
    record = pretrained.record
    require_encoder(pretrained.encoder, record, "per_protein", "finetune and embed", catalog)
    return Backbone(
        encoder=pretrained.encoder,
        teacher=pretrained.teacher,
        featurizer=dict(record["featurizer"]),
        record={k: v for k, v in record.items() if k != "state_dict"},
        origin=str(path),
        notes=list(pretrained.notes),
    )


def refuse_settings_for_built(settings: Mapping[str, Mapping[str, Any]] | None) -> None:
    """``settings`` (an encoder file's locations) given with an encoder that is not read from
    a file (a :class:`Backbone` already built, or a from-scratch one) would be ignored:
    refused instead."""
    if settings:
        raise ProtstepsError(
            "settings (the locations an encoder file does not decide) apply to an encoder read from "
            "a file, not to one already built or built from scratch"
        )


def scratch_backbone(config: RunConfig, catalog: Catalog) -> Backbone:
    """An untrained encoder of ``config``'s architecture, built exactly as ``pretrain``
    builds it (same featurizer, teacher resolution and encoder context)."""
    composition = compose(config, catalog)
    encoder = composition.model.encoder
    teacher = composition.model.teacher
    record = encoder_record(
        encoder,
        composition.config,
        teacher.embed_dim if teacher is not None else None,
        teacher=teacher,
        teacher_fingerprint=composition.model.teacher_fingerprint,
    )
    record.pop("state_dict")
    require_encoder(encoder, record, "per_protein", "finetune", catalog)
    return Backbone(
        encoder=encoder,
        teacher=teacher,
        featurizer=dict(record["featurizer"]),
        record=record,
        origin="none (from scratch)",
        notes=[n for n in composition.notes if n.startswith("teacher")],
    )


def batches_of(
    graphs: Sequence[ProteinGraph] | Any, order: Sequence[Sequence[int]]
) -> Iterator[tuple[list[int], Batch]]:
    """``(indices, batch)`` for each group of indices into ``graphs`` (a list or a
    :class:`~protsteps.data.GraphDataset`)."""
    for indices in order:
        yield list(indices), collate([graphs[i] for i in indices])


def teacher_features(teacher: Teacher | None, batch: Batch) -> Tensor | None:
    """``[N, D]`` frozen teacher features of the batch (no gradient), or ``None``."""
    if teacher is None:
        return None
    with torch.no_grad():
        features = teacher(batch.sequences)
    if features.shape[0] != batch.num_nodes:
        raise RuntimeError(
            f"the teacher returned {features.shape[0]} residue embeddings for {batch.num_nodes} residues"
        )
    return features


def forward(backbone: Backbone, batch: Batch) -> EncoderOutput:
    """The encoder's output on ``batch`` (already on the encoder's device)."""
    return backbone.encoder(batch, teacher_features(backbone.teacher, batch))


@torch.no_grad()
def encode(
    backbone: Backbone,
    graphs: Sequence[ProteinGraph] | Any,
    order: Sequence[Sequence[int]],
    device: torch.device,
    *,
    per_residue: bool = False,
) -> tuple[Tensor, list[Tensor] | None]:
    """Protein embeddings ``[len(graphs), d]`` (float32, CPU) in ``graphs`` order, and with
    ``per_residue`` each protein's ``[L_i, d]`` residue embeddings; the encoder runs in eval
    mode (its mode is restored after)."""
    was_training = backbone.encoder.training
    backbone.encoder.eval()
    count = len(graphs)
    out: Tensor | None = None
    residues: list[Tensor | None] = [None] * count
    try:
        for indices, batch in batches_of(graphs, order):
            output = forward(backbone, batch.to(device))
            if out is None:
                out = torch.zeros(count, output.graph.shape[1])
            out[indices] = output.graph.float().cpu()
            if per_residue:
                node = output.node.float().cpu()
                ptr = batch.ptr.tolist()
                for b, index in enumerate(indices):
                    residues[index] = node[ptr[b] : ptr[b + 1]].clone()
    finally:
        backbone.encoder.train(was_training)
    if out is None:
        out = torch.zeros(0, int(backbone.encoder.out_dim))
    return out, ([r for r in residues if r is not None] if per_residue else None)
