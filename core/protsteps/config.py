"""Typed component configs: dataclasses with defaults, types and help text.

Every component declares its settings as a dataclass whose fields are made with
:func:`option`. From that one declaration protsteps validates TOML sections, applies
``--set`` overrides, prints ``protsteps plugins show`` and generates the config reference.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``,
``Literal[...]`` of those, ``X | None`` (``None`` must then be the default, since TOML has
no null), and ``list[X]`` / ``tuple[X, ...]`` of scalars.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass
... class RadiusConfig:
...     cutoff: float = option(7.0, "CA-CA distance below which residues are joined (Å).")
>>> from_dict(RadiusConfig, {"cutoff": 8}, section="featurizer")
RadiusConfig(cutoff=8.0)
"""

from __future__ import annotations

import dataclasses
import difflib
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
]

T = TypeVar("T")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and a help text.

    Lists and other mutable defaults are copied per instance.
    """
    metadata = {"help": help}
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

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "default": _plain(self.default), "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


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
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


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
        except ConfigError as exc:
            raise ConfigError(f"{owner}: config field '{f.name}': {exc}") from exc
