"""``csv``: every record of ``metrics.jsonl`` as a row of ``RUNDIR/metrics.csv``."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protsteps.extensions import CallbackContext, RunStart, TrainingCallback
from protsteps.files import atomic_write_text

#: columns that come first, in this order; the others follow as they first appear
LEADING = ("step", "epoch", "split")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return str(value)


class CSVLogger(TrainingCallback):
    """Rows in ``metrics.jsonl`` order, one column per key ever logged (empty where a row
    lacks it: a validation row has no ``residues_per_second``). A new column rewrites the
    file (atomically); other rows are appended. On resume, rows after the resumed step are
    dropped, as in ``metrics.jsonl``."""

    def __init__(self, context: CallbackContext) -> None:
        self.path = Path(context.run_dir) / "metrics.csv"
        self.resume = context.resume
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []

    def on_start(self, run: RunStart) -> None:
        if self.resume and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                self.rows = [row for row in reader if _step(row) <= run.step]
        self._rewrite()

    def on_log(self, record: Mapping[str, Any]) -> None:
        row = {key: _cell(value) for key, value in record.items() if not isinstance(value, (list, dict))}
        new = [key for key in row if key not in self.columns]
        self.rows.append(row)
        if new or not self.path.exists():
            self.columns = [c for c in LEADING if c in self.columns or c in row] + [
                c for c in [*self.columns, *new] if c not in LEADING
            ]
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, self.columns, lineterminator="\n").writerow(row)

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def _step(row: Mapping[str, str]) -> int:
    try:
        return int(row.get("step") or 0)
    except ValueError:
        return 0
