"""Entry point of the built-in plugin ``tasks`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_tasks() -> list[Component]:
    from ._dihedral import DihedralConfig, DihedralTask
    from ._distance import DistanceConfig, DistanceTask

    return [
        Component(
            name="distance",
            factory=DistanceTask,
            config=DistanceConfig,
            description="Classify sampled residue pairs into CA-CA distance bins (30 x 5 Å); memory O(pairs).",
            capabilities=[],
            needs=["encoder.per_residue"],
        ),
        Component(
            name="dihedral",
            factory=DihedralTask,
            config=DihedralConfig,
            description="Hide the angles of 15% of residues and predict phi/psi back (periodic loss).",
            capabilities=[],
            needs=["encoder.per_residue"],
        ),
    ]
