"""Entry point of the built-in plugin ``gnn`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_encoders() -> list[Component]:
    return []
