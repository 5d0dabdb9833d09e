"""Command lines the CLI tests share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


def pretrain_args(
    structures: Iterable[Path | str],
    out: Path,
    cache: Path,
    *extra: str,
    teacher: str | None = "none",
    batch_size: int = 2,
    epochs: int | None = 1,
    num_pairs: int = 32,
    sets: Sequence[str] = (),
) -> list[str]:
    """``protsteps pretrain`` on ``structures`` with a tiny encoder (width 16), quiet, then
    ``extra``; ``teacher = None`` or ``epochs = None`` leave those options at their defaults."""
    args = ["pretrain", *map(str, structures), "--out", str(out), "--cache-dir", str(cache)]
    if teacher is not None:
        args += ["--teacher", teacher]
    args += ["--batch-size", str(batch_size)]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    for setting in ("encoder.hidden_dim=16", f"tasks.distance.num_pairs={num_pairs}", *sets):
        args += ["--set", setting]
    return [*args, "-q", *extra]
