"""Progress for a person watching a long run: a rich live bar on a terminal, plain lines
(one per update, good for log files and schedulers) otherwise."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """A bar over ``total`` units of work (steps, epochs) with a status text.

    Disabled displays print nothing (other processes under ``torchrun``, ``--quiet``) but
    warnings, which go to stderr unless ``warnings`` is off (other processes under
    ``torchrun``).
    """

    def __init__(self, label: str, enabled: bool = True, warnings: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.warnings = warnings
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int, completed: int = 0) -> None:
        """Show the bar (on a terminal only)."""
        if not self.enabled or not sys.stdout.isatty() or self._progress is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(f"[bold]{self.label}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self._task = self._progress.add_task(self.label, total=total, completed=completed, status="")
        self._progress.start()

    def update(self, completed: int, status: str, line: str | None = None) -> None:
        """Move the bar to ``completed`` with ``status``; without a bar, print ``line``
        (default: the status)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, status=status)
        else:
            print(line if line is not None else status, flush=True)

    def message(self, text: str) -> None:
        """A line above the bar (or on its own without one)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        """A line on stderr that ``--quiet`` does not silence (inputs that were left out, say)."""
        if not self.warnings:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False, style="yellow")
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
