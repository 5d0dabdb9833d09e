"""Built-in protsteps plugin: Encoders: the paper's GIN and an E(3)-equivariant encoder on e3nn.

Public modules: :mod:`protsteps_gnn.features` (node inputs and the angle encoding, for
encoders of any plugin) and :mod:`protsteps_gnn.testing` (invariance checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protsteps._lazy import lazy_names

if TYPE_CHECKING:
    from ._equivariant import EquivariantConfig, EquivariantEncoder, EquivariantLayer
    from ._gin import GINConfig, GINEncoder, GINLayer, edge_weights
    from .features import NodeInput, angle_encoding, angle_encoding_width

#: public name -> the module that defines it, imported on first use: the plugin's entry
#: point (``.hooks``) imports this package, and registering must not import torch
_WHERE = {
    "EquivariantConfig": "._equivariant",
    "EquivariantEncoder": "._equivariant",
    "EquivariantLayer": "._equivariant",
    "GINConfig": "._gin",
    "GINEncoder": "._gin",
    "GINLayer": "._gin",
    "edge_weights": "._gin",
    "NodeInput": ".features",
    "angle_encoding": ".features",
    "angle_encoding_width": ".features",
}

__all__ = [
    "EquivariantConfig",
    "EquivariantEncoder",
    "EquivariantLayer",
    "GINConfig",
    "GINEncoder",
    "GINLayer",
    "NodeInput",
    "angle_encoding",
    "angle_encoding_width",
    "edge_weights",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
