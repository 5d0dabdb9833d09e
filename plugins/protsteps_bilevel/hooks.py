"""Entry point of the built-in plugin ``bilevel`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_schemes() -> list[Component]:
    return []
