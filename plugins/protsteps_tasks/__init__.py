"""Built-in protsteps plugin: Pretext tasks of STEPS: pairwise distance bins and masked dihedral angles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protsteps._lazy import lazy_names

if TYPE_CHECKING:
    from ._dihedral import DihedralConfig, DihedralTask, angular_error, mask_residues
    from ._distance import DistanceConfig, DistanceTask, ResiduePairs, distance_bins, sample_residue_pairs

#: public name -> the module that defines it, imported on first use: the plugin's entry
#: point (``.hooks``) imports this package, and registering must not import torch
_WHERE = {
    "DihedralConfig": "._dihedral",
    "DihedralTask": "._dihedral",
    "angular_error": "._dihedral",
    "mask_residues": "._dihedral",
    "DistanceConfig": "._distance",
    "DistanceTask": "._distance",
    "ResiduePairs": "._distance",
    "distance_bins": "._distance",
    "sample_residue_pairs": "._distance",
}

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


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
