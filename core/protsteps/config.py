"""Typed component configs: dataclasses with defaults, types and help text.

Every component declares its settings as a dataclass whose fields are made with
:func:`option`. From that one declaration protsteps validates TOML sections, applies
``--set`` overrides, prints ``protsteps plugins show`` and generates the config reference.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``,
``Literal[...]`` of those, ``X | None`` (``None`` must then be the default, since TOML has
no null), and ``list[X]`` / ``tuple[X, ...]`` of scalars. A ``Literal`` of strings also
takes an integer whose digits are one of them (``precision = 16`` means ``"16"``).

Numbers are range-checked where they are read: a field may declare bounds
(``option(..., minimum=1, maximum=4096)``, also ``exclusive_minimum`` and
``exclusive_maximum``; for a list, each item), which :func:`from_dict` enforces, the JSON
Schema and the config reference show, and :func:`check_ranges` lets a config's
``__post_init__`` enforce for configs built in Python. Whatever a field declares, an integer
must fit in 64 bits and a float must not be NaN.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass
... class RadiusConfig:
...     cutoff: float = option(7.0, "CA-CA distance below which residues are joined (Å).")
>>> from_dict(RadiusConfig, {"cutoff": 8}, section="featurizer")
RadiusConfig(cutoff=8.0)
>>> @dataclass
... class WidthConfig:
...     hidden_dim: int = option(64, "Layer width.", minimum=1, maximum=16_384)
>>> from_dict(WidthConfig, {"hidden_dim": 1_000_000}, section="[encoder]")
Traceback (most recent call last):
...
protsteps.errors.ConfigError: [encoder] hidden_dim = 1000000 is out of range: it must be >= 1 and <= 16384
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import ConfigError

__all__ = [
    "option",
    "FieldInfo",
    "fields_of",
    "from_dict",
    "to_dict",
    "coerce",
    "parse_value",
    "type_name",
    "closest",
    "check_ranges",
    "check_range",
]

#: the bounds a field may declare, by their JSON Schema names (stored in the field's metadata)
BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
_BOUND_TEXT = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
#: every integer setting must fit in a signed 64-bit integer (what torch and numpy take)
INT64_MAX = 2**63 - 1

T = TypeVar("T")


def option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with a default, a help text and, for numbers, optional bounds
    (inclusive ``minimum``/``maximum``, strict ``exclusive_minimum``/``exclusive_maximum``;
    for a list, of each item) that every run file and ``--set`` value is checked against.

    Lists and other mutable defaults are copied per instance.
    """
    metadata: dict[str, Any] = {"help": help}
    for key, bound in (
        ("minimum", minimum),
        ("maximum", maximum),
        ("exclusiveMinimum", exclusive_minimum),
        ("exclusiveMaximum", exclusive_maximum),
    ):
        if bound is not None:
            metadata[key] = bound
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One config field, for help screens and JSON schemas."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    #: declared bounds by their JSON Schema names (``minimum``, ``exclusiveMaximum``, ...)
    bounds: tuple[tuple[str, Any], ...] = ()

    @property
    def range(self) -> str:
        """The bounds as text (``>= 1, <= 16384``), empty without any."""
        return range_text(dict(self.bounds))

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "default": _plain(self.default), "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        out.update(self.bounds)
        return out


def range_text(bounds: Mapping[str, Any]) -> str:
    """Bounds (JSON Schema names) as text: ``>= 1, <= 16384``."""
    return ", ".join(f"{_BOUND_TEXT[k]} {bounds[k]}" for k in BOUNDS if k in bounds)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # a plugin's annotations that do not resolve
        raise ConfigError(f"cannot read the field types of {cls.__qualname__}: {exc}") from exc


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def type_name(tp: Any) -> str:
    """A short human-readable name of a field type (``int``, ``'a' | 'b'``, ``list[str]``)."""
    optional, inner = _is_optional(tp)
    if optional:
        return f"{type_name(inner)} | None"
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list[{type_name(args[0])}]" if args else "list"
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", str(tp))


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def fields_of(cls: type) -> list[FieldInfo]:
    """The fields of a config dataclass, with their types, defaults and help texts."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        _, inner = _is_optional(tp)
        choices = get_args(inner) if get_origin(inner) is Literal else None
        out.append(
            FieldInfo(
                name=f.name,
                type=type_name(tp),
                default=_default_of(f),
                help=str(f.metadata.get("help", "")),
                choices=choices,
                bounds=tuple((k, f.metadata[k]) for k in BOUNDS if k in f.metadata),
            )
        )
    return out


def closest(name: str, known: list[str]) -> str | None:
    """The known name closest to ``name``, if any is close (case is ignored: ``GIN`` -> ``gin``)."""
    by_lower = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.5)
    return by_lower[matches[0]] if matches else None


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` (as read from TOML or ``--set``) against ``tp`` and convert it.

    ``where`` names the key for the error message, e.g. ``"[encoder] hidden_dim"``.
    """
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required ({type_name(tp)})")
    tp = inner
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in choices:
            return str(value)  # precision = 16 means "16"
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        args = [a for a in get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        items = [v if item_tp is Any else coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {_describe(value)}")
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported config type {type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], section: str) -> T:
    """Build the config dataclass ``cls`` from a mapping, validating every key.

    Raises :class:`ConfigError` naming the key, the section and the allowed keys.
    """
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints or key not in names:
            hint = closest(key, names)
            did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
            allowed = ", ".join(names) if names else "none"
            raise ConfigError(f"unknown key '{key}' in {section}{did_you_mean}; allowed keys: {allowed}")
        kwargs[key] = coerce(value, hints[key], f"{section} {key}")
        check_range(kwargs[key], _metadata(cls, key), f"{section} {key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def _metadata(cls: type, name: str) -> Mapping[str, Any]:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata
    return {}


def check_range(value: Any, metadata: Mapping[str, Any], where: str) -> None:
    """Refuse a number outside the bounds in ``metadata`` (see :func:`option`), an integer
    that does not fit in 64 bits, or a NaN; a list is checked item by item. ``where`` names
    the setting (``[train] seed``). Raises :class:`ConfigError`."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_range(item, metadata, f"{where}[{i}]")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bounds = {k: metadata[k] for k in BOUNDS if k in metadata}
    must = _must(bounds)
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{where} = nan is not a number; give a number" + (f" (it {must})" if must else ""))
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ConfigError(
            f"{where} = {value} is out of range: an integer setting must fit in 64 bits"
            + (f"; this one {must}" if must else "")
        )
    within = (
        ("minimum" not in bounds or value >= bounds["minimum"])
        and ("maximum" not in bounds or value <= bounds["maximum"])
        and ("exclusiveMinimum" not in bounds or value > bounds["exclusiveMinimum"])
        and ("exclusiveMaximum" not in bounds or value < bounds["exclusiveMaximum"])
    )
    if not within:
        raise ConfigError(f"{where} = {value!r} is out of range: it {must}")


def _must(bounds: Mapping[str, Any]) -> str:
    """``must be >= 1 and <= 16384`` (empty without bounds)."""
    if not bounds:
        return ""
    return "must be " + " and ".join(f"{_BOUND_TEXT[k]} {bounds[k]}" for k in BOUNDS if k in bounds)


def check_ranges(config: Any, section: str) -> None:
    """Check every field of the config dataclass instance ``config`` against its declared
    bounds (:func:`check_range`); for a config's ``__post_init__``, so that a config built in
    Python is held to the bounds a run file is. ``section`` names it in the message."""
    for f in dataclasses.fields(config):
        check_range(getattr(config, f.name), f.metadata, f"{section} {f.name}".strip())


def to_dict(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass as TOML-ready values (paths as strings, tuples as
    lists); ``None`` values stay ``None`` and are left out when written."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def parse_value(text: str) -> Any:
    """Parse the value of a ``--set key=value`` override as a TOML value when it is one
    (``128``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``) and as a bare string otherwise."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def check_config_class(cls: type, owner: str) -> None:
    """Check that a plugin's config class is a dataclass whose fields protsteps can read,
    write and override; raises :class:`ConfigError` naming the owner otherwise."""
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise ConfigError(f"{owner}: config must be a dataclass type, got {cls!r}")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{owner}: config field '{f.name}' has no default")
        optional, _ = _is_optional(hints[f.name])
        if optional and _default_of(f) is not None:
            raise ConfigError(
                f"{owner}: optional config field '{f.name}' must default to None "
                "(TOML has no null, so another default could not be unset)"
            )
        try:
            type_name(hints[f.name])
            default = _default_of(f)
            if default is not None:
                coerce(_plain(default), hints[f.name], f"{owner} {f.name}")
                check_range(default, f.metadata, f"default {f.name}")
        except ConfigError as exc:
            raise ConfigError(f"{owner}: config field '{f.name}': {exc}") from exc
