"""Downstream extensions: a head, a label format, a metric and an embeddings writer."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from protsteps.downstream import Embeddings, LabelledChain, LabelledSet, ManifestError
from protsteps.extensions import HeadContext, LabelOptions
from protsteps.files import atomic_write_text
from protsteps.structure import is_structure_path

SPLITS = ("train", "valid", "test")


class CosineHead(nn.Module):
    """Logits = scale * cos(embedding, class prototype): a prototype classifier.

    Why: with few proteins per class, comparing directions instead of learning a full
    affine map keeps classes with different embedding norms on an equal footing.
    ``embedding: [B, d]`` -> logits ``[B, C]``.
    """

    def __init__(self, context: HeadContext) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(context.num_classes, context.in_dim) * 0.1)
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        self.in_dim, self.num_classes = context.in_dim, context.num_classes

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(embedding, dim=1) @ F.normalize(self.prototypes, dim=1).T
        return self.log_scale.exp() * cosine

    def describe(self) -> dict[str, int]:
        return {"in_dim": self.in_dim, "num_classes": self.num_classes}


def read_class_folders(path: Path, options: LabelOptions) -> LabelledSet:
    """``--format class_folders``: ``ROOT/CLASS/*.pdb`` (splits drawn), or
    ``ROOT/{train,valid,test}/CLASS/*.pdb`` (splits given); every chain of a file is one
    protein, so each file must hold one chain."""
    if not path.is_dir():
        raise ManifestError(f"{path}: --format class_folders expects a folder of class folders")
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    by_split = bool(folders) and all(p.name in SPLITS for p in folders)
    rows = []
    for split_folder in folders if by_split else [path]:
        split = split_folder.name if by_split else None
        for class_folder in sorted(p for p in split_folder.iterdir() if p.is_dir()):
            for file in sorted(f for f in class_folder.rglob("*") if f.is_file() and is_structure_path(f)):
                origin = str(file.relative_to(path))
                rows.append(LabelledChain(str(file), None, (class_folder.name,), split, None, origin))
    if not rows:
        raise ManifestError(f"{path}: no structure files in class folders (ROOT/CLASS/*.pdb)")
    return LabelledSet(str(path), "folder", rows, settings={"layout": "split/class" if by_split else "class"})


def balanced_accuracy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean recall over the classes present among the true labels (single-label)."""
    targets = np.asarray(targets)
    if not len(targets):
        return float("nan")
    predicted = np.asarray(probabilities).argmax(1)
    recalls = [float((predicted[targets == c] == c).mean()) for c in np.unique(targets)]
    return float(np.mean(recalls))


def write_tsv(embeddings: Embeddings, path: Path) -> None:
    """``.tsv``: one row per chain: source, chain, residues, then the d embedding values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    width = embeddings.embeddings.shape[1] if embeddings.embeddings.ndim == 2 else 0
    writer.writerow(["source", "chain", "residues", *(f"e{i}" for i in range(width))])
    for i in range(len(embeddings)):
        values = (f"{v:.6g}" for v in embeddings.embeddings[i])
        writer.writerow([embeddings.source[i], embeddings.chain[i], int(embeddings.residues[i]), *values])
    atomic_write_text(path, buffer.getvalue())
