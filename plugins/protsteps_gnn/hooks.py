"""Entry point of the built-in plugin ``gnn`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl

from ._equivariant import EquivariantConfig, EquivariantEncoder
from ._gin import GINConfig, GINEncoder


@hookimpl
def protsteps_register_encoders() -> list[Component]:
    return [
        Component(
            name="gin",
            factory=GINEncoder,
            config=GINConfig,
            description="STEPS' GIN: distance-weighted sum aggregation, residual; depth, width, nonlinearity configurable.",
        ),
        Component(
            name="equivariant",
            factory=EquivariantEncoder,
            config=EquivariantConfig,
            description="E(3)-equivariant e3nn message passing (spherical harmonics, radial MLP, gates); invariant outputs.",
        ),
    ]
