"""protsteps: structure-aware protein self-supervised learning (STEPS) as plugins.

The public surface mirrors the CLI:

>>> import protsteps
>>> entry = protsteps.get_component("encoder", "gin")          # doctest: +SKIP
>>> encoder = protsteps.build("encoder", "gin", hidden_dim=64)  # doctest: +SKIP

Components come from plugins discovered through the ``protsteps`` entry-point group; see
``docs/plugins.md`` to write one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .components import (
    KINDS,
    BuildContext,
    Component,
    EncoderOutput,
    Featurizer,
    Scheme,
    TaskOutput,
)
from .config import option
from .hookspecs import hookimpl
from .presets import Preset
from .registry import Catalog, Entry, default_catalog

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    from .components import Encoder, PretextTask, Teacher
    from .export import Pretrained
    from .featurize import featurize
    from .graph import ALPHABET, Batch, ProteinGraph, collate

#: names whose modules import torch, imported on first use so that registering a component
#: (and so the command line) starts without torch: name -> module
_LAZY = {
    "Encoder": ".components",
    "PretextTask": ".components",
    "Teacher": ".components",
    "ALPHABET": ".graph",
    "Batch": ".graph",
    "ProteinGraph": ".graph",
    "collate": ".graph",
}

__all__ = [
    "__version__",
    "KINDS",
    "ALPHABET",
    "BuildContext",
    "Batch",
    "Catalog",
    "Component",
    "Encoder",
    "EncoderOutput",
    "Entry",
    "Featurizer",
    "Preset",
    "PretextTask",
    "ProteinGraph",
    "Scheme",
    "TaskOutput",
    "Teacher",
    "build",
    "collate",
    "list_components",
    "featurize",
    "from_pretrained",
    "get_component",
    "hookimpl",
    "option",
]


def get_component(kind: str, name: str) -> Entry:
    """The registry entry of an installed component (factory, config class, plugin)."""
    return default_catalog().get(kind, name)


def list_components(kind: str | None = None) -> list[Entry]:
    """Every installed component, or those of one kind."""
    return default_catalog().entries(kind)


def build(
    kind: str,
    name: str,
    *,
    config: Any = None,
    context: BuildContext | None = None,
    **values: Any,
) -> Any:
    """Construct a component from its config, exactly as the CLI does.

    >>> featurizer = protsteps.build("featurizer", "residue_graph", radius=8.0)  # doctest: +SKIP
    """
    return default_catalog().build(kind, name, config=config, context=context, **values)


def from_pretrained(
    path: str | os.PathLike[str],
    catalog: Catalog | None = None,
    *,
    with_teacher: bool = True,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Pretrained:
    """The encoder of a folder written by ``protsteps export`` (or of a run folder or an
    ``encoder.pt``) with its featurizer and teacher, in eval mode: see
    :func:`protsteps.hub.from_pretrained`.

    >>> model = protsteps.from_pretrained("gin-masif")  # doctest: +SKIP
    """
    from .hub import from_pretrained as load  # torch and safetensors only when a model is loaded

    return load(path, catalog, with_teacher=with_teacher, settings=settings)


class _Package(types.ModuleType):
    """The package's module type: ``protsteps.featurize`` is the function
    :func:`protsteps.featurize.featurize`, imported on first use. The import system binds a
    submodule to its parent's attribute when it first loads it; that binding of
    :mod:`protsteps.featurize` is ignored here, so the name stays the function (as it was when
    this package imported it eagerly)."""

    @property
    def featurize(self) -> Any:
        return importlib.import_module(".featurize", __name__).featurize

    @featurize.setter
    def featurize(self, value: Any) -> None:
        if not isinstance(value, types.ModuleType):
            raise AttributeError("protsteps.featurize is the function protsteps.featurize.featurize")


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    # a submodule (protsteps.data, protsteps.store, ...) as an attribute, as it was when this
    # package imported them eagerly: loaded on first use
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "featurize"})
