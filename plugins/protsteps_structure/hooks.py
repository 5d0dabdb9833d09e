"""Entry point of the built-in plugin ``structure`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_featurizers() -> list[Component]:
    return []
