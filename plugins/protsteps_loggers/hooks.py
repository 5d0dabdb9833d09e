"""Hooks of the built-in plugin ``loggers`` (entry point in protsteps' pyproject.toml)."""

from __future__ import annotations

from protsteps import hookimpl
from protsteps.extensions import Callback


@hookimpl
def protsteps_register_callbacks() -> list[Callback]:
    from .csv_logger import CSVLogger
    from .tensorboard_logger import TensorBoardLogger

    return [
        Callback("csv", CSVLogger, "RUNDIR/metrics.csv: one row per metrics.jsonl record (on by default)."),
        Callback(
            "tensorboard",
            TensorBoardLogger,
            "TensorBoard scalars under RUNDIR/tensorboard (needs pip install 'protsteps[tensorboard]').",
        ),
    ]
