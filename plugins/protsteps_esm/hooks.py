"""Entry point of the built-in plugin ``esm`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_teachers() -> list[Component]:
    return []
