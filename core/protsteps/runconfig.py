"""One TOML file describes a run.

.. code-block:: toml

    [featurizer]
    name = "residue_graph"
    radius = 7.0

    [encoder]
    name = "gin"
    hidden_dim = 256

    [[tasks]]
    name = "distance"
    weight = 1.0

    [[tasks]]
    name = "dihedral"

    [teacher]
    name = "auto"          # "auto", "none" or a registered teacher

    [scheme]
    name = "auto"          # "auto", or a registered scheme

    [train]
    epochs = 10

    [data]
    inputs = ["structures/"]

Component sections hold a ``name`` and the fields of that component's config dataclass
(validated against it); ``[[tasks]]`` entries may also hold a ``weight``. ``[train]`` and
``[data]`` are validated against :class:`TrainConfig` and :class:`DataConfig`.

Overrides, applied in this order: a preset (a named run file a plugin ships, ``--preset``),
the file, then CLI options (``--encoder``, ``--epochs``, ...), then each
``--set section.key=value``. Tasks are addressed by name or position:
``--set tasks.distance.num_pairs=128`` or ``--set tasks.0.weight=0.5``.

A file on top of a preset changes only what it says: a component section that names
another component replaces the preset's section (its settings belong to the other
component), one that names the same component or no name changes those settings; a
``[[tasks]]`` list replaces the preset's tasks, each keeping the preset's settings of a task
of the same name; ``[train]`` and ``[data]`` change the keys they give.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import tomllib

from . import _toml
from ._text import count
from .config import check_ranges, closest, from_dict, option, parse_value, to_dict
from .errors import ConfigError
from .precision import PRECISION_HELP, Precision
from .registry import Catalog

__all__ = [
    "TrainConfig",
    "DataConfig",
    "ComponentChoice",
    "RunConfig",
    "SECTIONS",
    "RESERVED_NAMES",
    "apply_set",
    "choose_component",
    "choose_tasks",
    "load_run_config",
    "merge_raw",
]

#: the most epochs a run may ask for (each epoch's batches are planned before the run starts)
MAX_EPOCHS = 100_000
#: the most data-loading worker processes
MAX_WORKERS = 256

#: names a section may take without a registered component of that name
RESERVED_NAMES: dict[str, tuple[str, ...]] = {"teacher": ("auto", "none"), "scheme": ("auto",)}

SECTIONS = ("featurizer", "encoder", "tasks", "teacher", "scheme", "train", "data")
_SINGLE = ("featurizer", "encoder", "teacher", "scheme")
_KIND = {
    "featurizer": "featurizer",
    "encoder": "encoder",
    "tasks": "task",
    "teacher": "teacher",
    "scheme": "scheme",
}


@dataclasses.dataclass
class TrainConfig:
    """How training runs: ``[train]``."""

    epochs: int = option(10, "Passes over the training structures.", minimum=1, maximum=MAX_EPOCHS)
    batch_size: int = option(8, "Proteins per batch (when max_residues is 0).", minimum=1, maximum=100_000)
    max_residues: int = option(
        0,
        "Residue budget per batch; batches are packed by length up to it (0: use batch_size).",
        minimum=0,
        maximum=100_000_000,
    )
    lr: float = option(
        1e-3, "Learning rate of the encoder and task heads (Adam).", exclusive_minimum=0, maximum=100
    )
    weight_decay: float = option(
        0.0, "Weight decay (AdamW) of the encoder and task heads.", minimum=0, maximum=100
    )
    schedule: Literal["constant", "cosine", "epoch_cosine"] = option(
        "cosine",
        "Learning-rate schedule after warm-up: constant, cosine (per step, to 0 at the end) or "
        "epoch_cosine (the released code: lr (1 + cos(pi e / E)) / 2 through epoch e of E).",
    )
    warmup_steps: int = option(0, "Steps of linear learning-rate warm-up.", minimum=0, maximum=1_000_000_000)
    grad_clip: float = option(1.0, "Clip the gradient norm to this value (0: no clipping).", minimum=0)
    seed: int = option(0, "Seed of parameters, data order and masking.", minimum=0, maximum=2**32 - 1)
    deterministic: bool = option(
        False,
        "Deterministic algorithms only (torch.use_deterministic_algorithms): runs and resumes "
        "repeat bit for bit. Without it, multi-threaded CPU gradient accumulation (index_put_) "
        "varies in the last bits between runs. Slower on GPU.",
    )
    device: str = option("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
    precision: Precision = option("32", PRECISION_HELP)
    valid_fraction: float = option(
        0.1,
        "Fraction of structures held out to choose best.pt (0: keep the last).",
        minimum=0,
        exclusive_maximum=1,
    )
    log_every: int = option(
        10, "Write a line to metrics.jsonl every this many steps.", minimum=1, maximum=1_000_000_000
    )
    callbacks: list[str] = option(
        ["csv"],
        "Training callbacks and loggers, by name (protsteps plugins lists them): csv writes "
        "metrics.csv, tensorboard event files (needs protsteps[tensorboard]); [] for none.",
    )
    checkpoint_every: int = option(
        100,
        "Write checkpoints/last.pt every this many steps (and at the end of every epoch; 0: epochs only).",
        minimum=0,
        maximum=1_000_000_000,
    )
    nonfinite: Literal["stop", "skip"] = option(
        "stop", "On a NaN/inf loss: stop naming the batch's structures, or skip the batch and count it."
    )
    workers: int = option(0, "Data-loading worker processes.", minimum=0, maximum=MAX_WORKERS)
    threads: int = option(
        0,
        "CPU threads of torch in each training process (0: auto: OMP_NUM_THREADS when set, else "
        "the physical cores shared among this node's processes and their loader workers, at most "
        "the whole cores the load average leaves idle; see docs/pretraining.md).",
        minimum=0,
        maximum=4096,
    )

    def __post_init__(self) -> None:
        check_ranges(self, "[train]")
        check_device_name(self.device, "[train] device")
        if len(set(self.callbacks)) != len(self.callbacks):
            raise ValueError(f"callbacks names a callback twice: {self.callbacks}")


@dataclasses.dataclass
class DataConfig:
    """Where structures come from: ``[data]``."""

    inputs: list[str] = option(
        [], "Structure files, folders or text files listing paths (empty: the bundled examples)."
    )
    cache_dir: str = option("", "Featurize cache folder ('' : ~/.cache/protsteps/graphs).")
    min_residues: int = option(
        10, "Chains with fewer residues are left out of training.", minimum=0, maximum=1_000_000
    )

    def __post_init__(self) -> None:
        check_ranges(self, "[data]")


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,4})?")


def check_device_name(name: str, where: str = "device") -> None:
    """Refuse a device protsteps cannot run on (``tpu:7``) in one line naming ``where``;
    whether CUDA is there is checked when the run starts."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ConfigError(
            f"{where} = {name!r} is not a device protsteps can use; give 'auto' (CUDA when "
            "available), 'cpu', 'cuda' or 'cuda:N'"
        )


@dataclasses.dataclass
class ComponentChoice:
    """A component section: the component's name, its validated config (``None`` for a
    reserved name such as teacher ``none``) and, for tasks, the loss weight."""

    name: str
    config: Any = None
    weight: float = 1.0


@dataclasses.dataclass
class RunConfig:
    """A whole run, validated against the installed components."""

    featurizer: ComponentChoice
    encoder: ComponentChoice
    tasks: list[ComponentChoice]
    teacher: ComponentChoice
    scheme: ComponentChoice
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    #: warnings from reading the config (settings of a renamed component that were dropped
    #: or are taken by the new one); not part of the config itself
    notes: list[str] = dataclasses.field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], catalog: Catalog, notes: list[str] | None = None) -> RunConfig:
        notes = [] if notes is None else notes
        raw = dict(raw)
        unknown = [k for k in raw if k not in SECTIONS]
        if unknown:
            hint = closest(unknown[0], list(SECTIONS))
            did_you_mean = f" (did you mean [{hint}]?)" if hint else ""
            raise ConfigError(
                f"unknown section [{unknown[0]}]{did_you_mean}; sections: {', '.join(SECTIONS)}"
            )
        merged = default_raw()
        merged.update(raw)
        tasks_raw = merged["tasks"]
        if not isinstance(tasks_raw, list):
            raise ConfigError("[[tasks]] must be an array of tables ([[tasks]] entries)")
        if not tasks_raw:
            raise ConfigError("[[tasks]]: at least one pretext task is needed")
        tasks = [_choice(catalog, "tasks", t, f"[[tasks]] #{i}", notes) for i, t in enumerate(tasks_raw)]
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[tasks]]: a task is listed twice ({', '.join(names)})")
        return cls(
            featurizer=_choice(catalog, "featurizer", merged["featurizer"], notes=notes),
            encoder=_choice(catalog, "encoder", merged["encoder"], notes=notes),
            tasks=tasks,
            teacher=_choice(catalog, "teacher", merged["teacher"], notes=notes),
            scheme=_choice(catalog, "scheme", merged["scheme"], notes=notes),
            train=from_dict(TrainConfig, _table(merged["train"], "train"), section="[train]"),
            data=from_dict(DataConfig, _table(merged["data"], "data"), section="[data]"),
            notes=notes,
        )

    def to_dict(self) -> dict[str, Any]:
        """TOML-ready values; ``RunConfig.from_dict(c.to_dict(), catalog) == c``."""

        def section(choice: ComponentChoice, with_weight: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {"name": choice.name}
            if with_weight:
                out["weight"] = choice.weight
            if choice.config is not None:
                out.update(to_dict(choice.config))
            return out

        return {
            "featurizer": section(self.featurizer),
            "encoder": section(self.encoder),
            "tasks": [section(t, with_weight=True) for t in self.tasks],
            "teacher": section(self.teacher),
            "scheme": section(self.scheme),
            "train": to_dict(self.train),
            "data": to_dict(self.data),
        }

    def dumps(self) -> str:
        """The config as TOML text."""
        return _toml.dumps(self.to_dict())


def default_raw() -> dict[str, Any]:
    """The run used when a file or option says nothing: STEPS with its two tasks."""
    return {
        "featurizer": {"name": "residue_graph"},
        "encoder": {"name": "gin"},
        "tasks": [{"name": "distance"}, {"name": "dihedral"}],
        "teacher": {"name": "auto"},
        "scheme": {"name": "auto"},
        "train": {},
        "data": {},
    }


def _table(value: Any, section: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {type(value).__name__}")
    return dict(value)


def _choice(
    catalog: Catalog, section: str, value: Any, label: str | None = None, notes: list[str] | None = None
) -> ComponentChoice:
    label = label or f"[{section}]"
    table = _table(value, section)
    name = table.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{label}: 'name' is required (the {_KIND[section]} to use)")
    weight = table.pop("weight", 1.0) if section == "tasks" else 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"{label} weight: expected a number, got {weight!r}")
    if name in RESERVED_NAMES.get(section, ()):
        if table:
            takers = catalog.taking_settings(_KIND[section], table)
            fix = " or ".join(f"--{section} {taker}" for taker in takers[:3])
            raise ConfigError(
                f"{label}: {section} '{name}' takes no settings, got {', '.join(table)}; "
                f"name a {_KIND[section]} to configure it"
                + (f': {fix} (in a run file: [{section}] name = "{takers[0]}")' if takers else "")
            )
        return ComponentChoice(name=name)
    kind = _KIND[section]
    entry = catalog.get(kind, name)
    _check_settings_belong(catalog, kind, name, table, label, notes)
    config: Any = from_dict(entry.config, table, section=f"{label} ({name})")
    return ComponentChoice(name=name, config=config, weight=float(weight))


def _owner_of_settings(catalog: Catalog, kind: str, name: str, table: Mapping[str, Any]) -> str | None:
    """Another component of ``kind`` whose settings ``table`` is (every key one of its fields,
    and every field it writes to a run file there): the section of a run written for that
    component whose ``name`` was changed afterwards. ``None`` when there is none."""
    if len(table) < 2:
        return None
    keys = set(table)
    for entry in catalog.entries(kind):
        other = entry.name
        if other == name:
            continue
        fields = {f.name: f for f in dataclasses.fields(entry.config)}
        written = {n for n, f in fields.items() if f.default is not None}
        if keys <= set(fields) and written <= keys:
            return other
    return None


def _check_settings_belong(
    catalog: Catalog, kind: str, name: str, table: Mapping[str, Any], label: str, notes: list[str] | None
) -> None:
    """A section that names ``name`` but holds every setting of another component (a run
    file whose ``name`` was edited): keys ``name`` does not take are refused saying so;
    when it takes them all, each is warned about, since it may mean something else there."""
    owner = _owner_of_settings(catalog, kind, name, table)
    if owner is None:
        return
    takes = {f.name for f in dataclasses.fields(catalog.get(kind, name).config)}
    foreign = [k for k in table if k not in takes]
    if foreign:
        raise ConfigError(
            f"{label} names {kind} '{name}' but holds the settings of {kind} '{owner}' "
            f"({', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not {name}'s): was its name "
            f"changed? Remove {owner}'s settings from the section, or name {owner} again"
        )
    if notes is not None:
        notes.append(
            f"warning: {label} names {kind} '{name}' but holds every setting of {kind} '{owner}' "
            f"(was its name changed?); {name} takes {', '.join(f'{k} = {table[k]!r}' for k in table)} as "
            f"its own settings: check they mean the same there, or remove them"
        )


def choose_component(
    raw: dict[str, Any], section: str, name: str | None, notes: list[str] | None = None, source: str = ""
) -> None:
    """Set ``[section] name`` from a CLI option; settings the file gave for another
    component are dropped (they belong to that one). With ``notes``, a warning naming
    ``source`` (the option) and every dropped setting is added to it."""
    if name is None:
        return
    current = _table(raw.get(section, {}), section)
    if current.get("name") != name:
        dropped = {k: v for k, v in current.items() if k != "name"}
        if dropped and notes is not None:
            notes.append(
                _dropped_note(section, current.get("name"), name, dropped, source or f"--{section} {name}")
            )
        raw[section] = {"name": name}


def _dropped_note(section: str, old: Any, new: str, dropped: Mapping[str, Any], source: str) -> str:
    settings = ", ".join(f"{k} = {v!r}" for k, v in dropped.items())
    return (
        f"warning: {source} replaces {_KIND[section]} '{old}': its settings ({settings}) are not used, "
        f"since they were {old}'s; give {new}'s own with --set {section}.KEY=VALUE"
    )


def choose_tasks(raw: dict[str, Any], names: Sequence[str] | None) -> None:
    """Replace the task list from repeated ``--task`` options, keeping the file's settings of
    the tasks that stay."""
    if not names:
        return
    previous = {t.get("name"): t for t in raw.get("tasks", []) if isinstance(t, Mapping)}
    raw["tasks"] = [dict(previous.get(n, {"name": n})) for n in names]


def apply_set(raw: dict[str, Any], assignment: str, notes: list[str] | None = None) -> None:
    """Apply one ``section.key=value`` override to a raw config in place (a warning for
    each renamed component's dropped settings goes to ``notes``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    path, _, text = assignment.partition("=")
    parts = path.strip().split(".")
    value = parse_value(text.strip())
    section = parts[0]
    if section not in SECTIONS:
        hint = closest(section, list(SECTIONS))
        did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
        raise ConfigError(
            f"--set {assignment!r}: unknown section '{section}'{did_you_mean}; "
            f"sections: {', '.join(SECTIONS)}"
        )
    if section == "tasks":
        if len(parts) != 3:
            raise ConfigError(
                f"--set {assignment!r}: tasks are set as tasks.NAME.key=value or tasks.INDEX.key=value"
            )
        tasks = raw.setdefault("tasks", [])
        selector, key = parts[1], parts[2]
        if selector.isdigit():
            index = int(selector)
            if index >= len(tasks):
                raise ConfigError(
                    f"--set {assignment!r}: there {'is' if len(tasks) == 1 else 'are'} only {count(len(tasks), 'task')}"
                )
            target = tasks[index]
        else:
            matches = [t for t in tasks if t.get("name") == selector]
            if not matches:
                listed = ", ".join(str(t.get("name")) for t in tasks)
                raise ConfigError(f"--set {assignment!r}: no task named '{selector}' (tasks: {listed})")
            target = matches[0]
        target[key] = value
        return
    if len(parts) != 2:
        raise ConfigError(f"--set {assignment!r}: expected {section}.key=value")
    key = parts[1]
    table = raw.setdefault(section, {})
    if section in _SINGLE and key == "name":
        choose_component(
            raw,
            section,
            value if isinstance(value, str) else str(value),
            notes,
            f"--set {assignment.strip()}",
        )
        return
    table[key] = value


def merge_raw(
    base: Mapping[str, Any], over: Mapping[str, Any], notes: list[str] | None = None, source: str = ""
) -> dict[str, Any]:
    """The raw tables of ``over`` applied on top of ``base`` (a preset), as the module
    docstring says; neither argument is changed. A section of ``over`` that renames a
    component drops ``base``'s settings of it, with a warning in ``notes`` naming ``source``."""
    merged = copy.deepcopy(dict(base))
    for section, value in copy.deepcopy(dict(over)).items():
        current = merged.get(section)
        if section == "tasks" and isinstance(value, list) and isinstance(current, list):
            previous = {t.get("name"): t for t in current if isinstance(t, Mapping)}
            merged["tasks"] = [
                {**previous.get(t.get("name"), {}), **t} if isinstance(t, Mapping) else t for t in value
            ]
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            renamed = section in _SINGLE and "name" in value and value["name"] != current.get("name")
            dropped = {k: v for k, v in current.items() if k != "name" and k not in value}
            if renamed and dropped and notes is not None:
                where = f'[{section}] name = "{value["name"]}"' + (f" in {source}" if source else "")
                notes.append(_dropped_note(section, current.get("name"), str(value["name"]), dropped, where))
            merged[section] = dict(value) if renamed else {**current, **value}
        else:
            merged[section] = value
    return merged


#: a run file larger than this is refused unread (a run file is a few hundred bytes of TOML)
MAX_RUN_FILE_BYTES = 1_000_000
#: tables and arrays nest at most this deep in a run file ([[tasks]] entries hold lists: 3)
MAX_RUN_FILE_DEPTH = 8


def load_raw(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The raw tables of a run file (an empty dict without a file).

    Anything that is not a small UTF-8 TOML file (a folder, a FIFO, binary data, a file of
    megabytes, tables nested thousands deep) is a :class:`ConfigError` naming the file."""
    if path is None:
        return {}
    path = Path(path)
    what = f"config file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} is a folder; give the run file (TOML) itself")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} is not a regular file (a pipe or device); give a TOML file")
    if info.st_size > MAX_RUN_FILE_BYTES:
        raise ConfigError(
            f"{what} is {info.st_size:,} bytes; a run file is a short TOML file "
            f"(at most {MAX_RUN_FILE_BYTES:,} bytes): is it the right file?"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} is not a text file (byte {exc.start} is not UTF-8); give a TOML run file"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{what} nests arrays or tables too deeply to read; a run file's tables are at most "
            f"{MAX_RUN_FILE_DEPTH} levels deep"
        ) from None
    depth = nesting_depth(raw)
    if depth > MAX_RUN_FILE_DEPTH:
        raise ConfigError(
            f"{what} nests tables or arrays {depth} levels deep; a run file's are at most "
            f"{MAX_RUN_FILE_DEPTH} (see docs/concepts.md for its sections)"
        )
    return raw


def nesting_depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_run_config(
    path: Path | None,
    catalog: Catalog,
    *,
    components: Mapping[str, str | None] | None = None,
    tasks: Sequence[str] | None = None,
    train: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    preset: str | None = None,
) -> RunConfig:
    """Start from a preset, apply a run file, CLI options and ``--set`` overrides, in that
    order.

    ``preset`` names a preset registered by a plugin (:mod:`protsteps.presets`);
    ``components`` maps single sections (featurizer, encoder, teacher, scheme) to a name
    chosen on the command line; ``train`` and ``data`` hold CLI options that are not None.
    """
    notes: list[str] = []
    raw = copy.deepcopy(load_raw(path))
    if preset is not None:
        raw = merge_raw(catalog.preset(preset).raw(), raw, notes, str(path) if path else "")
    merged = default_raw()
    merged.update(raw)
    for section, name in (components or {}).items():
        choose_component(merged, section, name)
    choose_tasks(merged, tasks)
    for section, values in (("train", train), ("data", data)):
        for key, value in (values or {}).items():
            if value is not None:
                merged.setdefault(section, {})[key] = value
    for assignment in sets:
        apply_set(merged, assignment, notes)
    return RunConfig.from_dict(merged, catalog, notes)


def write_run_config(config: RunConfig, path: Path) -> None:
    """Write ``config`` as TOML atomically."""
    from .files import atomic_write_text

    atomic_write_text(path, config.dumps())
