"""Built-in protsteps plugin: Pretext tasks of STEPS: pairwise distance bins and masked dihedral angles."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
