"""Names a package gives on first use: the module-level ``__getattr__`` and ``__dir__`` that
import a name's module only when the name is first asked for (so that importing a package,
for ``protsteps --help`` say, does not import torch)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose public ``name`` lives in the module
    ``where[name]`` (relative to the package, e.g. ``"._teacher"``); a name is imported once
    and then kept in the package's namespace.

    >>> __getattr__, __dir__ = lazy_names(__name__, {"ESMTeacher": "._teacher"})  # doctest: +SKIP
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
