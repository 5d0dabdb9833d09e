"""Entry point of the built-in plugin ``structure`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_featurizers() -> list[Component]:
    from .residue_graph import ResidueGraph, ResidueGraphConfig

    return [
        Component(
            name="residue_graph",
            factory=ResidueGraph,
            config=ResidueGraphConfig,
            description="Residues at CA with phi/psi/omega; radius (7 Å), kNN and sequential edges; optional RBF/SH edge features.",
            capabilities=[],
        )
    ]
