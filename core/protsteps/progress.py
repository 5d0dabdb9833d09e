"""Progress for a person watching a long run: a rich live bar on a terminal, plain lines
otherwise (log files, schedulers, ``nohup``): the first, then at most one every
``PROTSTEPS_PROGRESS_SECONDS`` seconds (default 30), and the last."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FileProgress", "ProgressDisplay", "Ticker", "format_duration", "progress_interval"]

#: seconds between two plain progress lines when nothing says otherwise
DEFAULT_INTERVAL = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines: ``PROTSTEPS_PROGRESS_SECONDS``, else 30."""
    text = os.environ.get("PROTSTEPS_PROGRESS_SECONDS", "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    """``42s``, ``5m07s``, ``2h03m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Ticker:
    """When a plain progress line is due: the first update, then one at most every
    ``interval`` seconds, and the last (``done == total``); also the rate and the time left."""

    def __init__(self, interval: float | None = None, clock: Any = time.monotonic) -> None:
        self.interval = progress_interval() if interval is None else interval
        self.clock = clock
        self.started = clock()
        self.begin: float | None = None  # units done when counting started (a resume)
        self.last: float | None = None

    def restart(self, done: float = 0) -> None:
        """Measure the rate from now, with ``done`` units already done."""
        self.started = self.clock()
        self.begin = done

    def due(self, done: float, total: float | None) -> bool:
        now = self.clock()
        if self.last is None or (total is not None and done >= total) or now - self.last >= self.interval:
            self.last = now
            return True
        return False

    def rate(self, done: float) -> float:
        """Units per second since counting started."""
        elapsed = self.clock() - self.started
        return (done - (self.begin or 0)) / elapsed if elapsed > 0 else math.nan

    def eta(self, done: float, total: float) -> str:
        rate = self.rate(done)
        return format_duration((total - done) / rate) if rate > 0 else "?"


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
        self._total: int | None = None
        self._ticker = Ticker()
        self._pending: str | None = None  # the latest plain line not printed yet

    def start(self, total: int, completed: int = 0) -> None:
        """Show the bar (on a terminal only; elsewhere :meth:`update` prints plain lines)."""
        self._total = total
        self._ticker.restart(completed)
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
        (default: the status) when one is due: the first, then at most one every
        :func:`progress_interval` seconds, and the last (``completed`` reaches the total)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, status=status)
            return
        text = line if line is not None else status
        if self._ticker.due(completed, self._total):
            print(text, flush=True)
            self._pending = None
        else:
            self._pending = text

    def rate(self, completed: int) -> float:
        """Units per second since :meth:`start`."""
        return self._ticker.rate(completed)

    def eta(self, completed: int) -> str:
        """The time left at the rate since :meth:`start` (``?`` before it is known)."""
        return self._ticker.eta(completed, self._total) if self._total is not None else "?"

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
        """Stop the bar; without one, print the latest line if it was held back (so a log
        ends with where the work stopped)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._pending is not None and self.enabled:
            print(self._pending, flush=True)
        self._pending = None


class FileProgress:
    """``on_total`` / ``on_result`` callbacks of :func:`~protsteps.featurize.featurize_many`
    that report a long featurize inside another command (pretrain, finetune) through
    ``message``: a line every :func:`progress_interval` seconds, and the last one after any
    of them; a featurize shorter than the interval says nothing."""

    def __init__(self, message: Callable[[str], None], label: str = "featurizing") -> None:
        self.message = message
        self.label = label
        self.ticker = Ticker()
        self.files = 0
        self.done = 0
        self.failed = 0
        self.shown = False

    def total(self, files: int) -> None:
        self.files = files
        self.ticker.restart()
        self.ticker.due(0, None)  # the first line is due one interval from now

    def result(self, result: Any) -> None:
        self.done += 1
        self.failed += 0 if result.ok else 1
        last = self.done >= self.files
        if (last and self.shown) or (not last and self.ticker.due(self.done, None)):
            self.shown = True
            self.message(
                f"{self.label}: {self.done}/{self.files} files, {self.failed} failed, "
                f"{self.ticker.rate(self.done):.1f} files/s, ETA {self.ticker.eta(self.done, self.files)}"
            )
