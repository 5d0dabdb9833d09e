"""protsteps: structure-aware protein self-supervised learning (STEPS) as plugins.

The public surface mirrors the CLI:

>>> import protsteps
>>> entry = protsteps.get_component("encoder", "gin")          # doctest: +SKIP
>>> encoder = protsteps.build("encoder", "gin", hidden_dim=64)  # doctest: +SKIP

Components come from plugins discovered through the ``protsteps`` entry-point group; see
``docs/plugins.md`` to write one.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .components import (
    KINDS,
    BuildContext,
    Component,
    Encoder,
    EncoderOutput,
    Featurizer,
    PretextTask,
    Scheme,
    TaskOutput,
    Teacher,
)
from .config import option
from .featurize import featurize
from .graph import ALPHABET, Batch, ProteinGraph, collate
from .hookspecs import hookimpl
from .presets import Preset
from .registry import Catalog, Entry, default_catalog

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
