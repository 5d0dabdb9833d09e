"""``learning_curve.png`` of a pretrain run: training and validation loss over steps, the
total and each task's, read back from ``metrics.jsonl``.

Drawn like finetune's figures (:mod:`protsteps.downstream._plots`): matplotlib's Agg canvas
directly (no ``pyplot``, so the caller's backend never changes), written atomically.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes

__all__ = ["plot_pretrain_curves", "read_metrics"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a line cut by a kill is passed over)."""
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _series(records: Sequence[Mapping[str, Any]], split: str, key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if record.get("split") == split and isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def _panels(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(metrics key, panel title): the total loss, each task's loss, the MI loss."""
    keys: dict[str, None] = {}
    for record in records:
        if record.get("split") in ("train", "valid"):
            keys.update(dict.fromkeys(k for k in record if k.endswith("/loss")))
    panels = [("loss", "total loss")]
    panels += [(key, key.removesuffix("/loss") + " loss") for key in keys]
    if any(record.get("split") == "train" and "mi" in record for record in records):
        panels.append(("mi", "MI loss (look-ahead)"))
    return panels


def plot_pretrain_curves(metrics: Path, path: Path, title: str = "") -> bool:
    """Draw ``metrics`` (a ``metrics.jsonl``) into ``path``; False when it holds no training
    record yet (nothing is written then)."""
    records = read_metrics(metrics)
    if not any(r.get("split") == "train" for r in records):
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = _panels(records)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    valid_steps, valid_losses = _series(records, "valid", "loss")
    best_step = valid_steps[valid_losses.index(min(valid_losses))] if valid_losses else None
    for position, (key, name) in enumerate(panels, 1):
        axis = figure.add_subplot(rows, columns, position)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        steps, values = _series(records, "train", key)
        many = len(steps) > 40
        axis.plot(steps, values, "-" if many else "o-", color="tab:blue", label="train", ms=3, lw=1)
        steps, values = _series(records, "valid", key)
        if steps:
            axis.plot(steps, values, "s--", color="tab:cyan", label="valid", ms=3)
        if best_step is not None:
            axis.axvline(best_step, color="grey", linestyle=":", label=f"best valid (step {best_step})")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_title(name, fontsize=10)
        axis.legend(loc="best", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return True
