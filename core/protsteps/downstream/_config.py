"""The settings of a finetune run, apart from the code that runs it (so that reading them,
for ``protsteps finetune --help`` say, needs neither torch nor numpy)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import option
from ..precision import PRECISION_HELP, Precision

__all__ = ["FinetuneConfig", "Mode", "TaskKind"]

Mode = Literal["probe", "full"]
TaskKind = Literal["auto", "single", "multi"]


@dataclasses.dataclass
class FinetuneConfig:
    """Settings of a finetune run (``[finetune]`` in ``finetune.toml``)."""

    mode: Mode = option(
        "full",
        "probe: the encoder is frozen and only the head learns (embeddings computed once); "
        "full: the encoder learns too. The teacher is frozen in both.",
    )
    task: TaskKind = option(
        "auto",
        "single: one class per protein (cross-entropy, best epoch by macro-F1); multi: a set of "
        "classes (binary cross-entropy, best epoch by Fmax); auto: multi when a protein has several labels.",
    )
    epochs: int = option(30, "Passes over the training proteins.")
    batch_size: int = option(16, "Proteins per batch.")
    max_residues: int = option(0, "Residue budget per batch in full mode (0: batch_size proteins).")
    lr: float = option(1e-3, "Learning rate of the head (Adam).")
    encoder_lr: float | None = option(None, "Learning rate of the encoder in full mode (unset: lr).")
    weight_decay: float = option(0.0, "Weight decay (AdamW when > 0).")
    head: str = option(
        "mlp",
        "The head on the protein embedding: a registered head (protsteps plugins lists them: mlp, linear).",
    )
    head_hidden: int = option(256, "Hidden width of the head's MLP (0: a linear head).")
    head_dropout: float = option(0.1, "Dropout in the head.")
    grad_clip: float = option(1.0, "Clip the gradient norm to this value (0: no clipping).")
    metric: str = option(
        "",
        "The validation metric choosing the best epoch: a registered metric (protsteps plugins lists "
        "them) that scores the task ('': macro_f1 single-label, fmax multi-label).",
    )
    seed: int = option(
        0, "Seed of the head's (and a from-scratch encoder's) initialisation and of batch order."
    )
    split_seed: int | None = option(None, "Seed of a drawn split (unset: seed).")
    split_fractions: list[float] = option([0.8, 0.1, 0.1], "Train, valid and test shares of a drawn split.")
    device: str = option("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
    precision: Precision = option("32", PRECISION_HELP)
    cache_dir: str = option("", "Featurize cache folder ('': the default cache).")
    workers: int = option(1, "Featurizing processes.")
    threads: int = option(
        0,
        "CPU threads of torch (0: auto: OMP_NUM_THREADS when set, else the physical cores, fewer "
        "when the load average says the machine is busy).",
    )
    callbacks: list[str] = option(
        ["csv"],
        "Training callbacks and loggers called with every epoch's record (protsteps plugins lists "
        "them: csv writes RUNDIR/metrics.csv, tensorboard needs protsteps[tensorboard]).",
    )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: auto), got {self.threads}")
        fractions = list(self.split_fractions)
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be three shares summing to 1, got {fractions}")
        if fractions[0] <= 0:
            raise ValueError("split_fractions: the training share must be positive")
