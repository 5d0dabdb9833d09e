"""``encoder.pt``: a pretrained encoder, its config, and what it expects as input.

The file is a plain dict (tensors, strings, numbers), loadable with
``torch.load(path, weights_only=True)`` and rebuilt by :func:`load_encoder` through the
registry, without the training stack (schemes, optimisers, tasks)::

    {"format": 1, "protsteps_version": ..., "out_dim": d,
     "encoder": {"name": "gin", "config": {...}},
     "featurizer": {"name": "residue_graph", "config": {...}},
     "teacher": {"name": "esm", "config": {...}} or {"name": "none"},
     "teacher_fingerprint": "<sha256>", "teacher_state": {...},
     "state_dict": {...}}

The encoder was trained on the named featurizer's graphs and (when there was one) on the
named teacher's features: embedding new proteins needs both again, which
:func:`load_pretrained` builds.

The teacher travels with the encoder: ``teacher_state`` is the teacher's ``state_dict`` (its
trainable tail), kept unless the teacher is ``stateless`` (rebuilt bit for bit from its
config, as ESM-2 and ProtBert are) and unchanged since it was built; ``teacher_fingerprint``
(SHA-256 of that state) lets :func:`load_pretrained` check that the teacher it rebuilds is
the one the encoder was trained with.

A file from elsewhere never decides where protsteps writes: in the featurizer, encoder and
teacher sections, a *location* setting (see :func:`is_location`) is used only when it names
a regular file that exists here and is not a place to write (``weights = "esm2.pt"``); every
other (``cache_dir``, a folder, a missing path) is dropped and takes the caller's value
(``settings``) or its default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ._version import __version__
from .capabilities import built_capabilities, declared_capabilities
from .components import ENCODER_CAPABILITIES, BuildContext, Encoder, Featurizer, Teacher
from .config import fields_of, to_dict
from .errors import CompositionError, ConfigError, ProtstepsError
from .files import read_torch_record
from .model import featurizer_context, teacher_state, teacher_state_fingerprint
from .registry import Catalog, default_catalog

__all__ = [
    "ENCODER_FORMAT",
    "Pretrained",
    "encoder_record",
    "is_location",
    "load_encoder",
    "load_pretrained",
    "require_encoder",
    "restore_teacher",
]

#: a setting named like a place where something is written (never taken from a file)
_WRITE_PLACE = re.compile(r"(^|_)(cache|dir|directory|folder|out|output|log|logs|save|tmp|temp)(_|$)")
#: a setting named like a location on disk
_LOCATION_NAME = re.compile(r"(^|_)(dir|directory|folder|path|file)$")

ENCODER_FORMAT = 1


def _section(choice: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": choice.name}
    if choice.config is not None:
        out["config"] = {k: v for k, v in to_dict(choice.config).items() if v is not None}
    return out


def encoder_record(
    encoder: Encoder,
    config: Any,
    teacher_dim: int | None,
    *,
    teacher: Teacher | None = None,
    teacher_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The contents of ``encoder.pt`` for ``encoder`` trained under the resolved run
    ``config`` on teacher features of width ``teacher_dim`` (``None``: no teacher).

    With ``teacher``, the record also holds the fingerprint of its state and the state itself
    (``teacher_state``), unless the teacher is ``stateless`` and its state still has
    ``teacher_fingerprint``, the fingerprint taken when it was built
    (:attr:`~protsteps.model.PretrainModel.teacher_fingerprint`)."""
    record: dict[str, Any] = {
        "format": ENCODER_FORMAT,
        "protsteps_version": __version__,
        "out_dim": int(encoder.out_dim),
        "teacher_dim": teacher_dim,
        "encoder": _section(config.encoder),
        "featurizer": _section(config.featurizer),
        "teacher": _section(config.teacher),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
    }
    if teacher is not None:
        state = teacher_state(teacher)
        fingerprint = teacher_state_fingerprint(state)
        record["teacher_fingerprint"] = fingerprint
        unchanged = bool(getattr(teacher, "stateless", False)) and fingerprint == teacher_fingerprint
        if state and not unchanged:
            record["teacher_state"] = state
    return record


def is_location(name: str, type_name: str) -> bool:
    """Whether the setting ``name`` (of type ``type_name``, as :func:`protsteps.config.fields_of`
    writes it) is a location on disk: a path, or a name ending in ``_dir``, ``_path``,
    ``_file``, ``_folder``."""
    return "path" in type_name or bool(_LOCATION_NAME.search(name))


def _usable_from_file(name: str, value: Any) -> bool:
    """A location from a file is used only when it is a regular file that exists here (not a
    folder, FIFO or device) and its name is not a place to write."""
    if _WRITE_PLACE.search(name) or not isinstance(value, str) or not value:
        return False
    try:
        return Path(value).is_file()
    except OSError:
        return False


def _location_settings(kind: str, name: str, catalog: Catalog) -> set[str]:
    try:
        entry = catalog.get(kind, name)
    except ProtstepsError:
        return set()
    return {f.name for f in fields_of(entry.config) if is_location(f.name, f.type)}


def location_settings(assignments: Sequence[str], option: str = "--set") -> dict[str, dict[str, str]]:
    """``KIND.KEY=VALUE`` assignments (``teacher.cache_dir=/scratch/trunks``) as the
    ``settings`` of :func:`load_pretrained`, per kind; which keys are locations the
    pretrained encoder lets the caller decide is checked there, against the components the
    file names."""
    settings: dict[str, dict[str, str]] = {}
    for assignment in assignments:
        path, sep, value = assignment.partition("=")
        kind, dot, key = (part.strip() for part in path.partition("."))
        value = value.strip()
        if not sep or not dot or not key or "." in key:
            raise ConfigError(f"{option} {assignment!r}: expected KIND.KEY=VALUE (teacher.cache_dir=PATH)")
        if kind not in ("featurizer", "encoder", "teacher"):
            raise ConfigError(
                f"{option} {assignment!r}: with a pretrained encoder only the locations of its featurizer, "
                "encoder and teacher can be set (teacher.cache_dir=PATH); the rest comes from the encoder file"
            )
        if not value:
            raise ConfigError(f"{option} {assignment!r}: no value; give a path (teacher.cache_dir=PATH)")
        if key in settings.get(kind, {}):
            raise ConfigError(f"{option} {kind}.{key} is given twice; give it once")
        settings.setdefault(kind, {})[key] = value
    return settings


def _own_locations(
    record: dict[str, Any], catalog: Catalog, settings: Mapping[str, Mapping[str, Any]] | None
) -> list[str]:
    """Replace, in ``record``'s featurizer, encoder and teacher sections, every location
    setting the file may not decide (see the module docstring) by the caller's ``settings``
    (``{"teacher": {"cache_dir": "..."}}``) or the default; returns a note per dropped one."""
    remaining: dict[str, Mapping[str, Any]] = dict(settings or {})
    notes = []
    for kind in ("featurizer", "encoder", "teacher"):
        section = record.get(kind)
        if not isinstance(section, dict) or not isinstance(section.get("name"), str):
            continue
        if section["name"] == "none":  # (a run without a teacher)
            continue
        config = section.get("config")
        values = dict(config) if isinstance(config, dict) else {}
        locations = _location_settings(kind, section["name"], catalog)
        for key in list(values):
            if (key in locations or is_location(key, "")) and not _usable_from_file(key, values[key]):
                notes.append(
                    f"{kind}.{key} = {values.pop(key)!r} in the encoder file is not used (a location "
                    "on the machine that wrote it)"
                )
        given = dict(remaining.pop(kind, {}) or {})
        refused = sorted(set(given) - locations)
        if refused:
            raise ConfigError(
                f"{kind} {section['name']}: {', '.join(refused)} cannot be set for a pretrained encoder (only "
                f"its locations can: {', '.join(sorted(locations)) or 'it has none'}); the rest comes from "
                "the encoder file"
            )
        values.update({k: str(v) for k, v in given.items() if v is not None})
        if "config" in section or values:
            section["config"] = values
    absent = sorted(set(remaining) & {"featurizer", "encoder", "teacher"})
    if absent:
        raise ConfigError(
            f"settings for the {', '.join(absent)}: the encoder file has no {' or '.join(absent)} "
            "(it was trained without one)"
        )
    if remaining:
        raise ConfigError(
            f"settings for {', '.join(sorted(remaining))}: only featurizer, encoder and teacher"
        )
    return notes


def _read(
    path: Path,
    catalog: Catalog,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    need_teacher: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    if path.is_dir():  # an exported folder (protsteps export): the same record, no pickle
        from .hub import read_export

        record = read_export(path, catalog, need_teacher=need_teacher)
    else:
        record = read_torch_record(path, "encoder file", ENCODER_FORMAT)
    if "state_dict" not in record:
        raise ProtstepsError(f"{path} is not a protsteps encoder file (encoder.pt of a pretrain run)")
    return record, _own_locations(record, catalog, settings)


def _resolve(path: Path) -> Path:
    """``encoder.pt`` of a run folder; an exported folder or a file as it is."""
    from .hub import is_export

    path = Path(path)
    return path / "encoder.pt" if path.is_dir() and not is_export(path) else path


def _featurizer_context(record: dict[str, Any], catalog: Catalog) -> BuildContext:
    """The context the encoder was built in at pretraining (featurizer name, config, widths
    and irreps of its attributes), so that an encoder sized by them is rebuilt the same."""
    section = record.get("featurizer") or {}
    name = section.get("name")
    if name is None:
        return BuildContext()
    config = catalog.make_config("featurizer", name, section.get("config", {}))
    return featurizer_context(name, catalog.build("featurizer", name, config=config), config)


@dataclasses.dataclass
class Pretrained:
    """A pretrained encoder with the featurizer and teacher it was trained with."""

    encoder: Encoder
    featurizer: Featurizer
    teacher: Teacher | None
    record: dict[str, Any]
    #: what was decided while loading (location settings of the file that were not used)
    notes: list[str] = dataclasses.field(default_factory=list)


def load_encoder(
    path: Path,
    catalog: Catalog | None = None,
    *,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Encoder, dict[str, Any]]:
    """Rebuild the encoder of ``encoder.pt`` (or of a run folder) with its weights; returns
    the encoder and the file's record (its location settings replaced as the module
    docstring says)."""
    catalog = catalog or default_catalog()
    record, _ = _read(_resolve(path), catalog, settings, need_teacher=False)
    return _encoder_of(record, path, catalog), record


def _encoder_of(record: dict[str, Any], path: Path, catalog: Catalog) -> Encoder:
    section = record["encoder"]
    encoder = catalog.build(
        "encoder",
        section["name"],
        config=catalog.make_config("encoder", section["name"], section.get("config", {})),
        context=dataclasses.replace(
            _featurizer_context(record, catalog), teacher_dim=record.get("teacher_dim")
        ),
    )
    _load_state(encoder, record["state_dict"], f"{path}: the weights do not fit encoder '{section['name']}'")
    return encoder


def _load_state(module: Any, state: Mapping[str, Tensor], refusal: str) -> None:
    """``module.load_state_dict(state)`` (strict), refused in one line that starts with
    ``refusal`` and names the missing and unexpected tensors and those of another shape."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [
        f"{k} {list(state[k].shape)} (the module's: {list(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if isinstance(state[k], Tensor) and state[k].shape != own[k].shape
    ]
    problems = [
        f"{label} {', '.join(names[:6])}" + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        for label, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if names
    ]
    if problems:
        raise ProtstepsError(
            f"{refusal} as its settings build it ({'; '.join(problems)}); the settings and the weights "
            "are not from the same model"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise ProtstepsError(f"{refusal}: {first}") from None


def restore_teacher(teacher: Teacher, record: Mapping[str, Any], where: str) -> None:
    """Give ``teacher`` (rebuilt from the record's settings) the state it had when the
    encoder file ``where`` was written: load ``teacher_state`` when the file has one, then
    check the state against ``teacher_fingerprint``. Raises a one-line
    :class:`~protsteps.errors.ProtstepsError` when they do not fit."""
    name = record["teacher"]["name"]
    state = record.get("teacher_state")
    if state is not None:
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ProtstepsError(f"{where}: teacher_state is not a dict of tensors")
        _load_state(teacher, state, f"{where}: the teacher state does not fit teacher '{name}'")
    expected = record.get("teacher_fingerprint")
    if expected is not None and teacher_state_fingerprint(teacher_state(teacher)) != expected:
        raise ProtstepsError(
            f"{where}: teacher '{name}' rebuilt from its settings is not the teacher the encoder was "
            "trained with (its weights differ: another weights file or model version, or a plugin "
            "teacher that declares itself stateless but is not); give it the same weights"
        )


def load_pretrained(
    path: Path,
    catalog: Catalog | None = None,
    *,
    with_teacher: bool = True,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Pretrained:
    """The encoder of a run folder (or ``encoder.pt``) with its featurizer and teacher (its
    trained state restored, see :func:`restore_teacher`).

    ``settings`` gives the locations the file may not decide, per kind
    (``{"teacher": {"cache_dir": "/scratch/trunks"}}``); other settings come from the file."""
    catalog = catalog or default_catalog()
    record, notes = _read(_resolve(path), catalog, settings, need_teacher=with_teacher)
    featurizer_section = record["featurizer"]
    featurizer = catalog.build(
        "featurizer",
        featurizer_section["name"],
        config=catalog.make_config(
            "featurizer", featurizer_section["name"], featurizer_section.get("config", {})
        ),
    )
    teacher = None
    teacher_section = record["teacher"]
    if with_teacher and teacher_section["name"] != "none":
        teacher = catalog.build(
            "teacher",
            teacher_section["name"],
            config=catalog.make_config("teacher", teacher_section["name"], teacher_section.get("config", {})),
        )
    if teacher is not None and teacher.embed_dim != record.get("teacher_dim"):
        raise ProtstepsError(
            f"{path}: teacher '{teacher_section['name']}' gives {teacher.embed_dim}-wide features, "
            f"the encoder was trained on {record.get('teacher_dim')}"
        )
    if teacher is not None:
        restore_teacher(teacher, record, str(path))
    encoder = _encoder_of(record, path, catalog)
    return Pretrained(encoder=encoder, featurizer=featurizer, teacher=teacher, record=record, notes=notes)


def require_encoder(
    encoder: Encoder, record: Mapping[str, Any], capability: str, who: str, catalog: Catalog | None = None
) -> None:
    """Refuse, in one line naming ``who`` (``"embed --per-residue"``), the encoder and the
    capability, an encoder of ``record`` (an ``encoder.pt`` record) that does not offer
    ``capability`` (declared by its plugin, else read from ``encoder``)."""
    catalog = catalog or default_catalog()
    section = record.get("encoder") or {}
    name = str(section.get("name", type(encoder).__name__))
    declared = None
    if name in catalog.registry("encoder"):
        entry = catalog.get("encoder", name)
        declared = declared_capabilities(
            entry, catalog.make_config("encoder", name, section.get("config", {}))
        )
    offered = built_capabilities("encoder", encoder, declared)
    if capability not in offered:
        what = ENCODER_CAPABILITIES.get(capability, f"the capability '{capability}'")
        raise CompositionError(
            f"{who} needs {what} from the encoder, which encoder '{name}' does not offer (it offers: "
            f"{', '.join(sorted(offered)) or 'nothing'})"
        )
