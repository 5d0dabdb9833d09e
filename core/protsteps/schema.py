"""Component configs as JSON Schema, for ``protsteps plugins --json`` and for tools that
write run files.

Each field of a config dataclass (see :mod:`protsteps.config`) becomes one property: its
type (``boolean``, ``integer``, ``number``, ``string``; a path is a ``string`` with
``"format": "path"``; ``Literal`` choices an ``enum``; ``list[X]`` an ``array``; ``X | None``
also allows ``null``, which in a run file means leaving the key out), its default and its help
text as ``description``. A field made with ``dataclasses.field(metadata={"minimum": ...,
"maximum": ...})`` also gets those bounds.

>>> import dataclasses
>>> from protsteps.config import option
>>> @dataclasses.dataclass
... class Radius:
...     cutoff: float = option(7.0, "CA-CA distance below which residues are joined (Å).")
>>> config_schema(Radius)["properties"]["cutoff"]
{'type': 'number', 'default': 7.0, 'description': 'CA-CA distance below which residues are joined (Å).'}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

__all__ = ["JSON_SCHEMA_DIALECT", "config_schema", "type_schema"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SCALARS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _json_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one config field type (see the module docstring)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and len(args) == 2:
            schema = type_schema(inner[0])
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
            if isinstance(schema.get("type"), str):
                schema["type"] = [schema["type"], "null"]
            return schema
        return {"anyOf": [type_schema(a) for a in args]}
    if origin is Literal:
        choices = list(get_args(tp))
        kinds = sorted({_SCALARS.get(type(c), "string") for c in choices})
        return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": choices}
    if origin in (list, tuple):
        items = [a for a in get_args(tp) if a is not Ellipsis]
        return {"type": "array", "items": type_schema(items[0])} if items else {"type": "array"}
    if tp is Path:
        return {"type": "string", "format": "path"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    return {}


def config_schema(cls: type) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the config dataclass ``cls``: every field a property
    with its type, default and description; no other keys allowed."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        schema = type_schema(hints[f.name])
        if f.default is not dataclasses.MISSING:
            schema["default"] = _json_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            schema["default"] = _json_value(f.default_factory())
        help_text = f.metadata.get("help")
        if help_text:
            schema["description"] = str(help_text)
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if bound in f.metadata:
                schema[bound] = f.metadata[bound]
        properties[f.name] = schema
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": cls.__name__,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
