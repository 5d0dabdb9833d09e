"""Extensions: what a researcher adds around the five components.

Besides components, a plugin can register six other kinds of thing, each through a hook of
:mod:`protsteps.hookspecs` that takes no arguments and returns a list of records:

=====================================  ==================  ===============================
hook                                   record              used by
=====================================  ==================  ===============================
``protsteps_register_heads``           :class:`Head`       ``finetune --head NAME``
``protsteps_register_label_formats``   :class:`LabelFormat` ``finetune --format NAME``
``protsteps_register_metrics``         :class:`Metric`     every finetune score;
                                                           ``finetune --metric NAME``
``protsteps_register_embeddings_writers`` :class:`EmbeddingsWriter` ``embed --format NAME``
``protsteps_register_callbacks``       :class:`Callback`   ``[train] callbacks`` of pretrain
``protsteps_register_commands``        :class:`Command`    ``protsteps NAME ...``
=====================================  ==================  ===============================

protsteps' own heads, formats, metrics, writers and loggers are registered through these
same hooks by the built-in plugins ``downstream`` and ``loggers``. A name that two plugins
register is refused where it is used, with an error naming both; an unknown name lists the
known ones. The :class:`~protsteps.registry.Catalog` holds them in :attr:`Catalog.extensions`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pluggy
import typer

from .config import closest
from .errors import DuplicateComponentError, UnknownComponentError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from .downstream import Embeddings, LabelledSet

__all__ = [
    "EXTENSION_KINDS",
    "Head",
    "HeadContext",
    "LabelFormat",
    "LabelOptions",
    "Metric",
    "EmbeddingsWriter",
    "Callback",
    "CallbackContext",
    "TrainingCallback",
    "RunStart",
    "Command",
    "ExtensionEntry",
    "Extensions",
]


# ---------------------------------------------------------------------------- heads


@dataclasses.dataclass(frozen=True)
class HeadContext:
    """What a head factory is told.

    in_dim: d, the width of the protein embedding the head reads.
    num_classes: C, the number of classes (the head returns ``[B, C]`` logits).
    hidden: ``[finetune] head_hidden``, a suggested hidden width (0: none).
    dropout: ``[finetune] head_dropout``.
    multi_label: ``True`` when a protein may have several classes (the logits then go
        through a sigmoid per class, else a softmax).
    """

    in_dim: int
    num_classes: int
    hidden: int = 256
    dropout: float = 0.1
    multi_label: bool = False


@dataclasses.dataclass(frozen=True)
class Head:
    """A finetune head: ``factory(HeadContext) -> torch.nn.Module`` whose forward maps the
    pooled protein embedding ``[B, d]`` to plain logits ``[B, C]`` (no softmax: the loss
    applies it). A ``describe() -> dict`` method, when the module has one, is stored in
    ``head.pt``."""

    name: str
    factory: Callable[[HeadContext], nn.Module]
    description: str


# ---------------------------------------------------------------------------- label formats


@dataclasses.dataclass(frozen=True)
class LabelOptions:
    """The label options of ``protsteps finetune`` (``None``: not given). A format declares
    which it takes (:attr:`LabelFormat.options`); giving another is refused before any work."""

    structures: Path | None = None
    label_column: str | None = None
    split_column: str | None = None
    group_column: str | None = None
    id_column: str | None = None
    label_separator: str | None = None

    def given(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


#: the options of :class:`LabelOptions`, as a format lists them
LABEL_OPTIONS = tuple(f.name for f in dataclasses.fields(LabelOptions))


@dataclasses.dataclass(frozen=True)
class LabelFormat:
    """A label/dataset format: ``read(path, LabelOptions) -> protsteps.downstream.LabelledSet``.

    options: the :class:`LabelOptions` fields it takes (others given are refused).
    needs_structures: ``--structures DIR`` is required (labels keyed by ids, files found in
        that folder).
    ``read`` raises :class:`protsteps.downstream.ManifestError` (a ``ProtstepsError``) naming
    the file and line for a label file it cannot use.
    """

    name: str
    read: Callable[[Path, LabelOptions], LabelledSet]
    description: str
    options: tuple[str, ...] = ()
    needs_structures: bool = False


# ---------------------------------------------------------------------------- metrics


@dataclasses.dataclass(frozen=True)
class Metric:
    """A finetune metric: ``compute(probabilities, targets) -> float`` (NaN when undefined).

    ``probabilities: [P, C] float64`` (softmax rows for single-label, a sigmoid per class for
    multi-label); ``targets: [P] int64`` class indices (single) or ``[P, C] bool`` (multi).
    task: which finetune tasks it scores: ``single``, ``multi`` or ``any``.
    higher_is_better: how ``--metric NAME`` picks the best epoch.
    """

    name: str
    compute: Callable[[np.ndarray, np.ndarray], float]
    task: Literal["single", "multi", "any"]
    description: str
    higher_is_better: bool = True

    def scores(self, multi: bool) -> bool:
        """Whether it scores a single-label (``multi=False``) or multi-label task."""
        return self.task == "any" or self.task == ("multi" if multi else "single")


# ---------------------------------------------------------------------------- writers


@dataclasses.dataclass(frozen=True)
class EmbeddingsWriter:
    """An embeddings file format: ``write(embeddings, path)`` writes a
    :class:`protsteps.downstream.Embeddings` to ``path`` (atomically: see
    :func:`protsteps.files.atomic_write_bytes`).

    suffix: the file-name ending it writes (``.npz``); ``embed --out`` with that ending
        picks it when ``--format`` is not given.
    check: called before any work (``embed`` calls it before featurizing); raises a
        ``ProtstepsError`` saying how to install what is missing.
    more_suffixes: other endings that pick it too (``.hdf5`` beside ``.h5``).
    """

    name: str
    write: Callable[[Embeddings, Path], None]
    suffix: str
    description: str
    check: Callable[[], None] | None = None
    more_suffixes: tuple[str, ...] = ()

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Every file-name ending that picks this writer, ``suffix`` first."""
        return (self.suffix, *self.more_suffixes)

    def takes(self, path: str | os.PathLike[str]) -> str | None:
        """The longest of :attr:`suffixes` that ends ``path`` (case aside), else ``None``."""
        name = Path(path).name.lower()
        ending = [s for s in self.suffixes if name.endswith(s.lower())]
        return max(ending, key=len) if ending else None


# ---------------------------------------------------------------------------- callbacks


@dataclasses.dataclass(frozen=True)
class CallbackContext:
    """What a callback factory is told: the run folder, the resolved run config (plain
    values, as in ``config.toml``), and whether the run continues an earlier one."""

    run_dir: Path
    config: Mapping[str, Any]
    resume: bool


@dataclasses.dataclass(frozen=True)
class RunStart:
    """Where a run starts: ``step`` optimiser steps done (0, or the resumed step) of
    ``total_steps``."""

    step: int
    total_steps: int


class TrainingCallback:
    """What pretrain calls, on rank 0 only; override the methods you need.

    - :meth:`on_start` once the training data is ready, before the first step;
    - :meth:`on_log` with every record written to ``metrics.jsonl``: ``split`` is
      ``train`` (means since the last line: ``loss``, ``TASK/loss``, ...), ``valid``
      (after each epoch) or ``replicas``; ``step`` and ``epoch`` say when;
    - :meth:`on_end` once, with ``completed``, ``interrupted`` or ``failed``.

    An exception raised by a callback is reported as a warning naming it, and the callback
    is called no more; the run goes on.
    """

    def on_start(self, run: RunStart) -> None:
        """The run is about to take its first (or first resumed) step."""

    def on_log(self, record: Mapping[str, Any]) -> None:
        """A record of ``metrics.jsonl`` (non-finite values as ``nan``/``inf`` floats)."""

    def on_end(self, status: str) -> None:
        """The run ended: ``completed``, ``interrupted`` or ``failed``. Close files here."""


@dataclasses.dataclass(frozen=True)
class Callback:
    """A training callback (a logger, say): ``factory(CallbackContext) -> TrainingCallback``,
    selected by name in ``[train] callbacks``. The factory runs before anything is featurized;
    it raises a ``ProtstepsError`` when it cannot work (a missing package: say how to install
    it)."""

    name: str
    factory: Callable[[CallbackContext], TrainingCallback]
    description: str


# ---------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class Command:
    """A CLI command: a ``typer.Typer`` app mounted as ``protsteps NAME``. Its commands are
    ``protsteps NAME SUB ...``; with one callback and no commands (``invoke_without_command``)
    it is ``protsteps NAME ...``. A name protsteps uses itself, or that two plugins register,
    is refused naming both."""

    name: str
    app: Any
    description: str


# ---------------------------------------------------------------------------- the registry

#: kind -> (hook name, record class, what the kind is called in messages)
EXTENSION_KINDS: dict[str, tuple[str, type, str]] = {
    "head": ("protsteps_register_heads", Head, "head"),
    "label_format": ("protsteps_register_label_formats", LabelFormat, "label format"),
    "metric": ("protsteps_register_metrics", Metric, "metric"),
    "embeddings_writer": ("protsteps_register_embeddings_writers", EmbeddingsWriter, "embeddings writer"),
    "callback": ("protsteps_register_callbacks", Callback, "callback"),
    "command": ("protsteps_register_commands", Command, "command"),
}

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclasses.dataclass(frozen=True)
class ExtensionEntry:
    """A registered extension: the plugin's record plus who registered it."""

    kind: str
    record: Any
    plugin: str
    version: str

    @property
    def name(self) -> str:
        return str(self.record.name)

    @property
    def description(self) -> str:
        return str(self.record.description)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "version": self.version,
            "description": self.description,
        }
        if isinstance(self.record, LabelFormat):
            out["options"] = list(self.record.options)
            out["needs_structures"] = self.record.needs_structures
        elif isinstance(self.record, Metric):
            out["task"] = self.record.task
            out["higher_is_better"] = self.record.higher_is_better
        elif isinstance(self.record, EmbeddingsWriter):
            out["suffix"] = self.record.suffix
            out["suffixes"] = list(self.record.suffixes)
        return out


def _check_record(kind: str, plugin: str, record: Any) -> None:
    hook, cls, _ = EXTENSION_KINDS[kind]
    where = f"hook {hook} of plugin '{plugin}'"
    if not isinstance(record, cls):
        raise TypeError(f"{where} returned {record!r}, expected protsteps.extensions.{cls.__name__}")
    name = getattr(record, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise TypeError(
            f"{where}: name {name!r} must be lower case letters, digits, '_' or '-', starting with a letter"
        )
    if isinstance(record, LabelFormat):
        unknown = [o for o in record.options if o not in LABEL_OPTIONS]
        if unknown:
            raise TypeError(
                f"{where}: label format '{record.name}' takes unknown options {unknown} "
                f"(known: {', '.join(LABEL_OPTIONS)})"
            )
    if isinstance(record, Command) and not isinstance(record.app, typer.Typer):
        raise TypeError(
            f"{where}: command '{record.name}' app must be a typer.Typer, got {type(record.app).__name__}"
        )
    if isinstance(record, Metric) and record.task not in ("single", "multi", "any"):
        raise TypeError(
            f"{where}: metric '{record.name}' task must be single, multi or any, not {record.task!r}"
        )
    if isinstance(record, EmbeddingsWriter):
        for suffix in record.suffixes:
            if not isinstance(suffix, str) or not suffix.startswith("."):
                raise TypeError(f"{where}: writer '{record.name}' suffix must start with '.', got {suffix!r}")
    for attribute in ("factory", "read", "compute", "write"):
        if hasattr(record, attribute) and not callable(getattr(record, attribute)):
            raise TypeError(f"{where}: {attribute} of '{name}' is not callable")


class Extensions:
    """The six extension registries of a catalog, filled from a plugin manager's hooks.

    Each kind's hook is asked when that kind is first used (listing the command line's
    commands asks the plugins for their commands alone)."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, ExtensionEntry]] = {kind: {} for kind in EXTENSION_KINDS}
        self._conflicts: dict[str, dict[str, DuplicateComponentError]] = {
            kind: {} for kind in EXTENSION_KINDS
        }
        #: what :meth:`collect` was given, kept until every kind is collected
        self._source: tuple[pluggy.PluginManager, Callable[[str], str], Callable[[str], str], Any] | None = (
            None
        )
        self._pending: list[str] = []

    def collect(
        self,
        pm: pluggy.PluginManager,
        owner: Callable[[str], str],
        version: Callable[[str], str],
        fail: Callable[[str, str, str], None],
    ) -> None:
        """Ask every plugin's hooks (each kind's when it is first used); ``owner(plugin)``
        names a plugin in errors, ``fail(plugin, message, kind)`` records a plugin whose
        hook raised or returned junk."""
        self._source = (pm, owner, version, fail)
        self._pending = list(EXTENSION_KINDS)

    def collect_pending(self) -> None:
        """Ask the hooks of every kind not asked yet."""
        for kind in list(self._pending):
            self._ready(kind)

    @property
    def conflicts(self) -> dict[str, dict[str, DuplicateComponentError]]:
        """kind -> name -> the error every use of a name that two plugins register raises."""
        self.collect_pending()
        return self._conflicts

    def conflicts_of(self, kind: str) -> dict[str, DuplicateComponentError]:
        """name -> the error of each name of ``kind`` that two plugins register."""
        self._ready(kind)
        return self._conflicts[kind]

    def _ready(self, kind: str) -> None:
        if kind not in self._pending or self._source is None:
            return
        self._pending.remove(kind)
        pm, owner, version, fail = self._source
        hook_name, _, label = EXTENSION_KINDS[kind]
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name
            try:
                declared = list(impl.function() or [])  # type: ignore[call-overload]
                for record in declared:
                    _check_record(kind, plugin, record)
            except Exception as exc:
                fail(plugin, str(exc) if isinstance(exc, TypeError) else f"{type(exc).__name__}: {exc}", kind)
                continue
            entries, conflicts = self._entries[kind], self._conflicts[kind]
            for record in declared:
                if record.name in conflicts:
                    continue  # a third claim: the error names two already
                existing = entries.pop(record.name, None)
                if existing is None:
                    entries[record.name] = ExtensionEntry(kind, record, plugin, version(plugin))
                    continue
                conflicts[record.name] = DuplicateComponentError(
                    f"{label} '{record.name}' is registered twice: by {owner(existing.plugin)} and by "
                    f"{owner(plugin)}; uninstall one of them"
                )

    def get(self, kind: str, name: str) -> ExtensionEntry:
        """The entry of ``kind`` registered as ``name``; an unknown name lists the known."""
        label = EXTENSION_KINDS[kind][2]
        conflicts = self.conflicts_of(kind)
        if name in conflicts:
            raise conflicts[name]
        entries = self._entries[kind]
        if name in entries:
            return entries[name]
        known = sorted(entries)
        hint = closest(name, known)
        did_you_mean = f" Did you mean '{hint}'?" if hint else ""
        listing = ", ".join(known) if known else "none are installed"
        raise UnknownComponentError(f"unknown {label} '{name}'.{did_you_mean} Known {label}s: {listing}")

    def names(self, kind: str) -> list[str]:
        self._ready(kind)
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[ExtensionEntry]:
        kinds = [kind] if kind is not None else list(EXTENSION_KINDS)
        for k in kinds:
            self._ready(k)
        return [self._entries[k][name] for k in kinds for name in sorted(self._entries[k])]

    def records(self, kind: str) -> list[Any]:
        return [entry.record for entry in self.entries(kind)]

    def all_conflicts(self) -> list[DuplicateComponentError]:
        return [error for errors in self.conflicts.values() for error in errors.values()]


def metrics_for(extensions: Extensions, multi: bool) -> list[Metric]:
    """The registered metrics that score a single- or multi-label task, by name."""
    return [m for m in extensions.records("metric") if m.scores(multi)]


def check_metric(extensions: Extensions, name: str, multi: bool | None) -> Metric:
    """The metric ``name`` (``--metric``); refused when it does not score the task."""
    metric: Metric = extensions.get("metric", name).record
    if multi is not None and not metric.scores(multi):
        task = "multi" if multi else "single"
        known = ", ".join(m.name for m in metrics_for(extensions, multi)) or "none"
        raise UnknownComponentError(
            f"metric '{name}' scores {metric.task}-label tasks, this one is {task}-label; "
            f"its metrics: {known} (--metric)"
        )
    return metric


def writer_for(
    extensions: Extensions, path: str | os.PathLike[str], name: str | None = None
) -> EmbeddingsWriter:
    """The embeddings writer named ``name``, else the one whose suffix ends ``path``. A named
    writer whose suffix ``path`` lacks is refused, so that a file's name says its format."""
    path = Path(path)
    if name:
        writer: EmbeddingsWriter = extensions.get("embeddings_writer", name).record
        if writer.takes(path) is None:
            raise UnknownComponentError(
                f"--out {path}: the {writer.name} writer writes {' or '.join(writer.suffixes)} files; "
                f"name the file {path.stem}{writer.suffix}"
            )
        return writer
    writers: Sequence[EmbeddingsWriter] = extensions.records("embeddings_writer")
    matching = sorted((w for w in writers if w.takes(path)), key=lambda w: -len(w.takes(path) or ""))
    if not matching:
        if not writers:
            raise UnknownComponentError(f"--out {path}: no embeddings writer is installed")
        suffixes = [s for w in writers for s in w.suffixes]
        listed = " or ".join([", ".join(suffixes[:-1]), suffixes[-1]] if len(suffixes) > 1 else suffixes)
        raise UnknownComponentError(
            f"--out {path}: the file name must end in {listed} (the suffixes of the installed embeddings writers)"
        )
    return matching[0]
