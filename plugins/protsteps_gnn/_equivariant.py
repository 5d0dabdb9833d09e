r"""An E(3)-equivariant message-passing encoder on e3nn, with invariant outputs.

Node states are direct sums of irreducible representations of O(3) (``hidden_irreps``:
scalars ``0e``, pseudo-scalars ``0o``, vectors ``1o``, pseudo-vectors ``1e``, rank-2 parts
``2e``/``2o``). One layer updates the state :math:`h_i` of residue :math:`i` from its
neighbours :math:`j` (edges of the featurizer's graph):

.. math::

    m_i = \frac{1}{\sqrt{\bar n}} \sum_{j \in \mathcal{N}(i)}
        h_j \otimes_{R(d_{ij})} Y(\hat r_{ij}),
    \qquad
    h_i' = \mathrm{Gate}\big(\mathrm{Lin}(m_i) + \mathrm{Lin}'(h_i)\big) \;(+\, h_i),

where :math:`Y` are the spherical harmonics (``l <= lmax``, 2 by default) of the unit edge
vector :math:`\hat r_{ij}`, :math:`\otimes_R` is a channel-wise tensor product whose path
weights :math:`R(d_{ij})` are produced per edge by a radial MLP on a smooth finite radial
basis of the CA-CA distance (vanishing at ``cutoff``), :math:`\bar n` is ``avg_neighbors``,
the Gate applies SiLU (``0e``) or tanh (``0o``) to scalars and multiplies every other irrep
by a sigmoid-activated scalar gate, and the last term is a residual where the irreps agree.

Inputs are the scalar node features of :class:`~protsteps_gnn.features.NodeInput`
(teacher or residue type, angle encoding) embedded as ``0e`` channels. The residue
embedding is a linear map of the final layer's scalar channels (``0e`` and ``0o``), hence
invariant to rotations and translations of the structure; the protein embedding is its mean.

Why 128 scalar channels by default: the embedding is read from the scalars only, and with 32
of them the distance task barely beats the majority bin on held-out structures (it learns
the dihedrals well); 128 give it room (``docs/encoders_tasks.md``). Vector and rank-2
channels cost far more per edge, so they stay few.

Pseudo-scalars change sign under reflection: the embedding is SE(3)-invariant but a mirror
image is a different protein (proteins are chiral; α-helices are right-handed). ``0o``
channels first appear in layer 3 (they need a pseudo-vector, which needs a cross product of
two vectors), so use ``num_layers >= 3`` to keep chirality, or drop the odd irreps from
``hidden_irreps`` for a fully E(3)-invariant encoder.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import Tensor, nn

from protsteps import BuildContext, Encoder, EncoderOutput, option
from protsteps.graph import Batch
from protsteps.scatter import scatter

from ._config import MAX_LAYERS, MAX_WIDTH, NodeInputConfig, node_input

__all__ = ["EquivariantConfig", "EquivariantEncoder", "EquivariantLayer"]


@dataclasses.dataclass
class EquivariantConfig(NodeInputConfig):
    """Settings of the ``equivariant`` encoder."""

    out_dim: int = option(128, "Width of the residue and protein embeddings.", minimum=1, maximum=MAX_WIDTH)
    hidden_irreps: str = option(
        "128x0e + 8x0o + 8x1o + 8x1e + 4x2e + 4x2o",
        "Irreps of the node states (e3nn notation); must contain 0e (the residue embedding is read from 0e and 0o).",
    )
    num_layers: int = option(
        3,
        "Message-passing layers (>= 3 lets pseudo-scalars, hence chirality, reach the output).",
        minimum=1,
        maximum=MAX_LAYERS,
    )
    lmax: int = option(
        2, "Highest degree of the edge spherical harmonics (1 or 2 or more).", minimum=1, maximum=8
    )
    radial_basis: int = option(
        8, "Smooth radial basis functions of the CA-CA distance over [0, cutoff].", minimum=1, maximum=1024
    )
    radial_hidden: int = option(
        32, "Hidden width of the radial MLP that makes tensor-product weights.", minimum=1, maximum=MAX_WIDTH
    )
    cutoff: float = option(7.0, "Distance (Å) where the radial basis vanishes; edges beyond carry nothing.")
    avg_neighbors: float = option(8.0, "Messages are summed and divided by the square root of this.")

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            irreps = o3.Irreps(self.hidden_irreps)
        except (ValueError, AssertionError) as exc:
            raise ValueError(
                f"hidden_irreps {self.hidden_irreps!r} is not e3nn irreps notation: {exc}"
            ) from exc
        if o3.Irrep("0e") not in [ir for _, ir in irreps]:
            raise ValueError(f"hidden_irreps {self.hidden_irreps!r} must contain scalars (0e)")
        for name in ("out_dim", "num_layers", "lmax", "radial_basis", "radial_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.radial_basis < 2:
            raise ValueError(f"radial_basis must be >= 2, got {self.radial_basis}")
        if self.cutoff <= 0 or self.avg_neighbors <= 0:
            raise ValueError("cutoff and avg_neighbors must be positive")


class EquivariantLayer(nn.Module):
    """One equivariant message-passing layer.

    Parameters
    ----------
    irreps_in: irreps of the incoming node states.
    irreps_target: the irreps the layer should produce; those its tensor products cannot
        reach from ``irreps_in`` are left out (see :attr:`irreps_out`).
    lmax: degree of the spherical harmonics of edge vectors.
    radial_basis, radial_hidden, cutoff, avg_neighbors: see :class:`EquivariantConfig`.

    Call it as ``layer(x, edge_index, edge_vector, edge_distance)`` with ``x: [N, irreps_in.dim]``,
    ``edge_index: [2, E] long`` (source, target), ``edge_vector: [E, 3]`` and
    ``edge_distance: [E]``; it returns ``[N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_target: o3.Irreps,
        lmax: int = 2,
        radial_basis: int = 8,
        radial_hidden: int = 32,
        cutoff: float = 7.0,
        avg_neighbors: float = 10.0,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.radial_basis = radial_basis
        self.cutoff = cutoff
        self.avg_neighbors = avg_neighbors

        reachable = {ir_out for _, ir1 in self.irreps_in for _, ir2 in self.irreps_sh for ir_out in ir1 * ir2}
        kept = o3.Irreps([(mul, ir) for mul, ir in o3.Irreps(irreps_target) if ir in reachable])
        scalars = o3.Irreps([(mul, ir) for mul, ir in kept if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in kept if ir.l > 0])
        gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
        # tanh for pseudo-scalars: an even activation would turn them into scalars
        self.gate = Gate(
            scalars,
            [nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
            gates,
            [torch.sigmoid] * len(gates),
            gated,
        )
        wanted = {ir for _, ir in self.gate.irreps_in}

        # Channel-wise ("uvu") products keep the per-edge weights small: one weight per
        # channel and path instead of one per pair of channels.
        mid: list[tuple[int, o3.Irrep]] = []
        instructions = []
        for i1, (mul, ir1) in enumerate(self.irreps_in):
            for i2, (_, ir2) in enumerate(self.irreps_sh):
                for ir_out in ir1 * ir2:
                    if ir_out in wanted:
                        instructions.append((i1, i2, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        self.irreps_mid = o3.Irreps(mid)
        self.tensor_product = o3.TensorProduct(
            self.irreps_in,
            self.irreps_sh,
            self.irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = FullyConnectedNet(
            [radial_basis, radial_hidden, self.tensor_product.weight_numel], nn.functional.silu
        )
        self.linear = o3.Linear(self.irreps_mid, self.gate.irreps_in)
        self.self_connection = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == self.irreps_in

    def forward(self, x: Tensor, edge_index: Tensor, edge_vector: Tensor, edge_distance: Tensor) -> Tensor:
        source, target = edge_index[0], edge_index[1]
        sh = o3.spherical_harmonics(self.irreps_sh, edge_vector, normalize=True, normalization="component")
        radial = soft_one_hot_linspace(
            edge_distance, 0.0, self.cutoff, self.radial_basis, basis="smooth_finite", cutoff=True
        ) * math.sqrt(self.radial_basis)
        messages = self.tensor_product(x[source], sh, self.radial(radial))
        aggregated = scatter(messages, target, x.shape[0], "sum") / math.sqrt(self.avg_neighbors)
        out = self.gate(self.linear(aggregated) + self.self_connection(x))
        return out + x if self.residual else out


class EquivariantEncoder(Encoder):
    """The ``equivariant`` encoder: e3nn message passing with invariant scalar outputs.

    Parameters
    ----------
    config: an :class:`EquivariantConfig`.
    context: ``context.teacher_dim`` is the teacher's width, or ``None`` without a teacher.

    ``forward(batch, teacher_features)`` returns ``node: [N, out_dim]`` and
    ``graph: [B, out_dim]`` (mean of ``node`` over each protein's residues), both invariant
    under rotations and translations of the structure. ``structure`` is ``node``: there is no
    residual from the inputs around the message passing (the skips inside the layers are part
    of it), so with detached teacher features it does not depend on the teacher.
    """

    requires: ClassVar[frozenset[str]] = frozenset(
        {"residue_type", "dihedrals", "edge_index", "edge_distance", "edge_vector"}
    )

    def __init__(self, config: EquivariantConfig, context: BuildContext) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.out_dim
        self.structure_dim = config.out_dim
        self.inputs = node_input(config, context.teacher_dim)
        hidden = o3.Irreps(config.hidden_irreps).simplify()
        width = hidden.count("0e")
        self.embed = nn.Linear(self.inputs.out_dim, width)
        irreps = o3.Irreps(f"{width}x0e")
        layers = []
        for _ in range(config.num_layers):
            layer = EquivariantLayer(
                irreps,
                hidden,
                lmax=config.lmax,
                radial_basis=config.radial_basis,
                radial_hidden=config.radial_hidden,
                cutoff=config.cutoff,
                avg_neighbors=config.avg_neighbors,
            )
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.irreps_out = irreps
        scalar_columns = [
            torch.arange(sl.start, sl.stop)
            for (_, ir), sl in zip(irreps, irreps.slices(), strict=True)
            if ir.l == 0
        ]
        self.register_buffer("scalar_columns", torch.cat(scalar_columns), persistent=False)
        self.readout = nn.Linear(int(self.scalar_columns.numel()), config.out_dim)

    def forward(self, batch: Batch, teacher_features: Tensor | None = None) -> EncoderOutput:
        h = self.embed(self.inputs(batch, teacher_features))
        vector = batch.edge_vector.to(h.dtype)
        distance = batch.edge_distance.to(h.dtype)
        for layer in self.layers:
            h = layer(h, batch.edge_index, vector, distance)
        node = self.readout(h[:, self.scalar_columns])
        graph = scatter(node, batch.batch, batch.num_graphs, "mean")
        # no residual from the inputs: the whole output is message passing
        return EncoderOutput(node=node, graph=graph, structure=node)
