"""Built-in protsteps plugin: Encoders: the paper's GIN and an E(3)-equivariant encoder on e3nn.

Public modules: :mod:`protsteps_gnn.features` (node inputs and the angle encoding, for
encoders of any plugin) and :mod:`protsteps_gnn.testing` (invariance checks).
"""

from __future__ import annotations

from ._equivariant import EquivariantConfig, EquivariantEncoder, EquivariantLayer
from ._gin import GINConfig, GINEncoder, GINLayer, edge_weights
from .features import NodeInput, angle_encoding, angle_encoding_width

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
