"""``tensorboard``: scalars of every logged record as TensorBoard event files."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protsteps.errors import ComponentUnavailableError
from protsteps.extensions import CallbackContext, RunStart, TrainingCallback

INSTALL_HINT = "pip install 'protsteps[tensorboard]' (or pip install tensorboard)"
#: record keys that say when or where, not what was measured
_NOT_SCALARS = ("step", "epoch", "split")


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or a one-line error saying how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ComponentUnavailableError(
            f"callback 'tensorboard' needs the tensorboard package: {INSTALL_HINT}; "
            'or leave it out of [train] callbacks (e.g. --set train.callbacks=["csv"])'
        ) from None
    return SummaryWriter


class TensorBoardLogger(TrainingCallback):
    """Writes ``RUNDIR/tensorboard/events.*``: each numeric value of a record as the scalar
    ``SPLIT/KEY`` (``train/loss``, ``valid/distance/loss``) at the record's step. View with
    ``tensorboard --logdir RUNDIR/tensorboard``. A resumed run adds to the same folder;
    TensorBoard shows the last value written for a step."""

    def __init__(self, context: CallbackContext) -> None:
        self.writer_class = summary_writer_class()  # refuses before anything is featurized
        self.log_dir = Path(context.run_dir) / "tensorboard"
        self.writer: Any = None

    def on_start(self, run: RunStart) -> None:
        self.writer = self.writer_class(log_dir=str(self.log_dir), purge_step=run.step or None)

    def on_log(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        split, step = str(record.get("split", "train")), int(record.get("step", 0))
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(float(value)):
                self.writer.add_scalar(f"{split}/{key}", float(value), step)
        self.writer.flush()

    def on_end(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
