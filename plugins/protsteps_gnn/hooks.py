"""Entry point of the built-in plugin ``gnn`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl

#: both encoders return per-residue and per-protein embeddings and the structure view
#: (EncoderOutput.structure); the equivariant one's outputs are invariant (no vectors)
ENCODER_OUTPUTS = ["per_residue", "per_protein", "structure"]


@hookimpl
def protsteps_register_encoders() -> list[Component]:
    from ._equivariant import EquivariantConfig, EquivariantEncoder
    from ._gin import GINConfig, GINEncoder

    return [
        Component(
            name="gin",
            factory=GINEncoder,
            config=GINConfig,
            description="STEPS' GIN: distance-weighted sum aggregation, residual; depth, width, nonlinearity configurable.",
            capabilities=ENCODER_OUTPUTS,
        ),
        Component(
            name="equivariant",
            factory=EquivariantEncoder,
            config=EquivariantConfig,
            description="E(3)-equivariant e3nn message passing (spherical harmonics, radial MLP, gates); invariant outputs.",
            capabilities=ENCODER_OUTPUTS,
        ),
    ]
