"""Built-in protsteps plugin: Pretext tasks of STEPS: pairwise distance bins and masked dihedral angles."""

from __future__ import annotations

from ._dihedral import DihedralConfig, DihedralTask, angular_error, mask_residues
from ._distance import DistanceConfig, DistanceTask, ResiduePairs, distance_bins, sample_residue_pairs

__all__ = [
    "DihedralConfig",
    "DihedralTask",
    "DistanceConfig",
    "DistanceTask",
    "ResiduePairs",
    "angular_error",
    "distance_bins",
    "mask_residues",
    "sample_residue_pairs",
]
