"""A training callback: RUNDIR/loss_summary.json at the end of a run."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protsteps.extensions import CallbackContext, RunStart, TrainingCallback
from protsteps.files import atomic_write_text


class LossSummary(TrainingCallback):
    """Keeps the last training loss and the best validation loss (with its step) and writes
    them, with how the run ended, to ``RUNDIR/loss_summary.json``."""

    def __init__(self, context: CallbackContext) -> None:
        self.path = Path(context.run_dir) / "loss_summary.json"
        self.summary: dict[str, Any] = {"records": 0, "last_train_loss": None, "best_valid_loss": None}

    def on_start(self, run: RunStart) -> None:
        self.summary.update(start_step=run.step, total_steps=run.total_steps)

    def on_log(self, record: Mapping[str, Any]) -> None:
        self.summary["records"] += 1
        loss = record.get("loss")
        if not isinstance(loss, float) or not math.isfinite(loss):
            return
        if record.get("split") == "train":
            self.summary["last_train_loss"] = loss
        elif record.get("split") == "valid":
            best = self.summary["best_valid_loss"]
            if best is None or loss < best:
                self.summary.update(best_valid_loss=loss, best_valid_step=record["step"])

    def on_end(self, status: str) -> None:
        atomic_write_text(self.path, json.dumps({**self.summary, "status": status}, indent=2) + "\n")
