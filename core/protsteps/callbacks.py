"""The training callbacks of a pretrain run (``[train] callbacks``), called on rank 0.

:class:`TrainingCallbacks` builds the callbacks named in the run config from the catalog
(before anything is featurized or written, so a wrong name or a missing package costs
nothing) and passes them the run's start, every ``metrics.jsonl`` record and its end. A
callback that raises is reported once as a warning naming it and its plugin, and is called
no more: a logger must not end a run. See :class:`protsteps.extensions.TrainingCallback`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import build_in_plugin
from .extensions import CallbackContext, RunStart, TrainingCallback

__all__ = ["TrainingCallbacks"]


class TrainingCallbacks:
    """The callbacks of one run, by name; each call isolated from the others."""

    def __init__(self, callbacks: Sequence[tuple[str, str, TrainingCallback]] = ()) -> None:
        #: (name, plugin, callback) of the callbacks still called
        self.active = list(callbacks)
        self.warn: Callable[[str], None] = lambda message: None
        self.ended = False

    @classmethod
    def build(
        cls, catalog: Any, names: Sequence[str], context: CallbackContext, *, enabled: bool = True
    ) -> TrainingCallbacks:
        """The callbacks ``names`` (``enabled=False``, on ranks other than 0: none, but the
        names are still checked). An unknown name lists the known ones; a factory's own
        exception becomes a :class:`CompositionError` naming the callback and its plugin."""
        built = []
        for name in names:
            entry = catalog.extensions.get("callback", name)
            if not enabled:
                continue
            callback = build_in_plugin(f"callback '{name}'", entry.plugin, entry.record.factory, context)
            built.append((name, entry.plugin, callback))
        return cls(built)

    def _call(self, method: str, *args: Any) -> None:
        for item in list(self.active):
            name, plugin, callback = item
            function = getattr(callback, method, None)
            if function is None:
                continue
            try:
                function(*args)
            except Exception as exc:
                self.active.remove(item)
                self.warn(
                    f"warning: callback '{name}' of plugin '{plugin}' failed in {method} and is called no more: "
                    f"{type(exc).__name__}: {exc}"
                )

    def start(self, run: RunStart) -> None:
        self._call("on_start", run)

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.ended:
            self._call("on_log", dict(record))

    def end(self, status: str) -> None:
        """Once: ``completed``, ``interrupted`` or ``failed``."""
        if not self.ended:
            self.ended = True
            self._call("on_end", status)
