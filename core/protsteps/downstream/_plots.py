"""PNG figures of a finetune run: the learning curve and the confusion matrices.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so that writing
them never changes the backend of the process that called us (a notebook, say), and they
are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _text
from ..files import atomic_write_bytes

__all__ = ["plot_learning_curve", "plot_confusion"]


def _save(figure: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_learning_curve(
    history: Sequence[Mapping[str, Any]], metric: str, best_epoch: int, path: Path, title: str = ""
) -> None:
    """Training and validation loss (left axis) and the validation ``metric`` (right
    axis) per epoch, the chosen epoch marked."""
    from matplotlib.figure import Figure

    epochs = [int(h["epoch"]) for h in history]
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axis = figure.add_subplot(1, 1, 1)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss", ms=3)
    axis.plot(epochs, [h["valid_loss"] for h in history], "s--", color="tab:cyan", label="valid loss", ms=3)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    right = axis.twinx()
    values = [h.get(f"valid_{metric}", math.nan) for h in history]
    right.plot(epochs, values, "^-", color="tab:orange", label=f"valid {metric}", ms=3)
    right.set_ylabel(f"valid {metric}")
    right.set_ylim(-0.02, 1.02)
    axis.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    handles = axis.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    axis.legend(handles[0] + more[0], handles[1] + more[1], loc="best", fontsize=8)
    axis.set_title(title or "learning curve", fontsize=10)
    _save(figure, path)


def plot_confusion(
    matrices: Mapping[str, np.ndarray], classes: Sequence[str], path: Path, title: str = ""
) -> None:
    """One panel per split (``{"valid": [C, C], "test": [C, C]}``), rows true, columns
    predicted, counts written in the cells."""
    from matplotlib.figure import Figure

    count = len(classes)
    side = min(max(3.0, 0.45 * count + 1.5), 14.0)
    figure = Figure(figsize=(side * len(matrices) + 1.0, side + 0.5), layout="constrained")
    for position, (split, matrix) in enumerate(matrices.items(), 1):
        axis = figure.add_subplot(1, len(matrices), position)
        axis.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())))
        if count <= 40:
            axis.set_xticks(range(count), [str(c) for c in classes], rotation=90, fontsize=7)
            axis.set_yticks(range(count), [str(c) for c in classes], fontsize=7)
        if count <= 25:
            for t in range(count):
                for p in range(count):
                    if matrix[t, p]:
                        light = matrix[t, p] > matrix.max() / 2
                        axis.text(
                            p,
                            t,
                            str(int(matrix[t, p])),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if light else "black",
                        )
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{split} ({_text.count(int(matrix.sum()), 'protein')})", fontsize=10)
    if title:
        figure.suptitle(title, fontsize=10)
    _save(figure, path)
