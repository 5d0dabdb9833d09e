"""Entry point of the built-in plugin ``tasks`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_tasks() -> list[Component]:
    return []
