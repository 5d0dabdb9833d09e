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

Only the first ``mixing_scalars`` (16) scalar channels of a layer's input make vector and
rank-2 messages; the other scalars make scalar messages only. With all 128, their products
with the harmonics were two thirds of every message (and of the encoder's time), for the 8
vector and 4 rank-2 channels the layer keeps; measured in ``docs/benchmarks.md`` (three
times the proteins per CPU-second, no loss on the learning check). The product itself is
:class:`ChannelwiseProduct`, the numbers of e3nn's ``TensorProduct`` with fewer tensor
operations.

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

__all__ = ["ChannelwiseProduct", "EquivariantConfig", "EquivariantEncoder", "EquivariantLayer"]


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
    mixing_scalars: int = option(
        16,
        "Scalar (0e) channels of a layer's input whose products with the edge harmonics make vector and "
        "rank-2 messages too; the other scalars make scalar messages only (0: all of them).",
        minimum=0,
        maximum=MAX_WIDTH,
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


class ChannelwiseProduct(nn.Module):
    r"""The channel-wise ("uvu") tensor product of node states with edge spherical harmonics
    and per-edge path weights: the same numbers as the e3nn
    :class:`~e3nn.o3.TensorProduct` it is made from, with fewer and larger tensor operations.

    For an input irrep block :math:`b` (``u`` channels of degree :math:`l_1`) and a path
    :math:`p` from it (through the harmonics of degree :math:`l_{2,p}` to degree
    :math:`l_p`) the message along edge :math:`e` from node :math:`s(e)` is

    .. math::

        m_{e,p,u,k} = w_{e,p,u} \sum_i x_{s(e),u,i}\, S_{e,i,(p,k)}, \qquad
        S_{e,i,(p,k)} = \alpha_p \sum_j C^{l_1 l_{2,p} l_p}_{ijk}\, Y_{e,j},

    with :math:`C` the Wigner 3j symbols and :math:`\alpha_p` e3nn's path weight.
    :math:`S_e` (``[d_1, K_b]``, all paths of the block side by side) does not depend on the
    channel: one matrix product of the harmonics with a constant gives it for every edge.
    For scalar inputs (:math:`d_1 = 1`) a path's messages are then one broadcast product
    of ``[E, u]`` (states times weights) with ``[E, d_p]``, written straight into the output;
    for other degrees one batched ``[u, d_1] @ [d_1, K_b]`` product per edge serves every
    path of the block. e3nn's generated code makes a slice, an outer product and an einsum
    per path, and the backward pass of each slice allocates a zero tensor the size of all
    edges' inputs.

    Parameters
    ----------
    product: an e3nn ``TensorProduct`` whose instructions are all weighted ``"uvu"`` paths
        with weights given per call (``shared_weights=False``), one instruction per output
        irrep, and every irrep of its second input of multiplicity 1.

    Call it as ``product(x, sh, weight, source)`` with ``x: [N, irreps_in.dim]``,
    ``sh: [E, irreps_sh.dim]``, ``weight: [E, weight_numel]`` (e3nn's order) and
    ``source: [E] long``; it returns ``[E, irreps_out.dim]`` whose :meth:`to_e3nn_layout` is
    ``product(x[source], sh, weight)``.
    """

    def __init__(self, product: o3.TensorProduct) -> None:
        super().__init__()
        self.irreps_in = product.irreps_in1
        self.irreps_sh = product.irreps_in2
        self.irreps_out = product.irreps_out
        instructions = product.instructions
        if product.shared_weights or any(mul != 1 for mul, _ in self.irreps_sh):
            raise ValueError("ChannelwiseProduct needs per-call weights and harmonics of multiplicity 1")
        outs = [ins.i_out for ins in instructions]
        if sorted(outs) != list(range(len(self.irreps_out))):
            raise ValueError("ChannelwiseProduct needs exactly one instruction per output irrep")
        for ins in instructions:
            if ins.connection_mode != "uvu" or not ins.has_weight:
                raise ValueError(f"ChannelwiseProduct reads only weighted 'uvu' paths, not {ins}")
        self.weight_sizes = [self.irreps_in[ins.i_in1].mul for ins in instructions]
        self.weight_numel = sum(self.weight_sizes)
        weight_offsets = [sum(self.weight_sizes[:k]) for k in range(len(instructions))]
        sh_slices, out_slices = self.irreps_sh.slices(), self.irreps_out.slices()
        order: list[int] = []  # the e3nn column of each column of the messages
        # per block: (first column, channels, degree dim, [(instruction, output, column, dim)])
        self.blocks: list[tuple[int, int, int, list[tuple[int, int, int, int]]]] = []
        for i_in, ((mul, ir_in), columns) in enumerate(
            zip(self.irreps_in, self.irreps_in.slices(), strict=True)
        ):
            paths = [k for k, ins in enumerate(instructions) if ins.i_in1 == i_in]
            if not paths:
                continue
            width = sum(self.irreps_out[instructions[k].i_out].ir.dim for k in paths)
            coupling = torch.zeros(ir_in.dim, self.irreps_sh.dim, width, dtype=torch.float64)
            layout, column = [], 0
            for k in paths:
                ins = instructions[k]
                ir_sh, ir_out = self.irreps_sh[ins.i_in2].ir, self.irreps_out[ins.i_out].ir
                cg = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
                coupling[:, sh_slices[ins.i_in2], column : column + ir_out.dim] = cg * ins.path_weight
                layout.append((k, ins.i_out, column, ir_out.dim))
                column += ir_out.dim
            # [harmonics, d_1 * K_b]: S_e of every edge by one matrix product
            flat = coupling.transpose(0, 1).reshape(self.irreps_sh.dim, ir_in.dim * width)
            self.register_buffer(
                f"coupling_{len(self.blocks)}", flat.to(torch.get_default_dtype()), persistent=False
            )
            if ir_in.dim == 1:  # path by path, each [u, d_p] as e3nn lays it out
                for _, out, _, _ in layout:
                    order += range(out_slices[out].start, out_slices[out].stop)
            else:  # [u, K_b]: channel, then the block's paths side by side
                index = []
                for u in range(mul):
                    for k, out, _, dim in layout:
                        index += [weight_offsets[k] + u] * dim
                        order += range(out_slices[out].start + u * dim, out_slices[out].start + (u + 1) * dim)
                self.register_buffer(
                    f"weight_index_{len(self.blocks)}", torch.tensor(index), persistent=False
                )
            self.blocks.append((columns.start, mul, ir_in.dim, layout))
        position = torch.empty(len(order), dtype=torch.long)
        position[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        self.register_buffer("e3nn_order", position, persistent=False)

    def forward(self, x: Tensor, sh: Tensor, weight: Tensor, source: Tensor) -> Tensor:
        edges = sh.shape[0]
        weights = weight.split(self.weight_sizes, dim=1)
        outputs: list[Tensor] = []
        for b, (start, mul, dim, layout) in enumerate(self.blocks):
            shared = sh @ getattr(self, f"coupling_{b}")  # [E, d_1 * K_b]
            x_b = x.narrow(1, start, mul * dim).index_select(0, source)
            if dim == 1:
                for k, _, column, width in layout:
                    scaled = (x_b * weights[k])[:, :, None]
                    outputs.append((scaled * shared[:, None, column : column + width]).reshape(edges, -1))
            else:
                products = torch.bmm(x_b.reshape(edges, mul, dim), shared.reshape(edges, dim, -1))
                expanded = weight.index_select(1, getattr(self, f"weight_index_{b}"))
                outputs.append(products.reshape(edges, -1) * expanded)
        return torch.cat(outputs, dim=1)

    def to_e3nn_layout(self, messages: Tensor) -> Tensor:
        """``[..., irreps_out.dim]``: messages (or their sums over edges) in the column order
        of ``irreps_out``. The forward pass lays out the paths of a block of vectors or
        higher degrees side by side per channel (one product with the weights instead of
        one per path), so that this reordering is left to the caller, best made once on
        the sums per node rather than on every edge."""
        return messages.index_select(-1, self.e3nn_order)


def _split_scalars(irreps: o3.Irreps, count: int) -> tuple[o3.Irreps, int | None]:
    """``irreps`` with its first ``0e`` block split after ``count`` channels (the same
    columns), and the index of the block after the split (``None`` when ``count`` is 0 or
    covers the block: nothing split)."""
    out: list[tuple[int, o3.Irrep]] = []
    rest = None
    for mul, ir in irreps:
        if rest is None and ir == o3.Irrep("0e") and 0 < count < mul:
            out += [(count, ir), (mul - count, ir)]
            rest = len(out) - 1
        else:
            out.append((mul, ir))
    return o3.Irreps(out), rest


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
        mixing_scalars: int = 0,
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
        # channel and path instead of one per pair of channels. Only the first
        # ``mixing_scalars`` scalar channels also make vector and rank-2 messages: with all
        # 128, their 128 x (1 + 3 + 5) components were two thirds of every message, for 8
        # vector and 4 rank-2 channels after the layer's linear map.
        self.irreps_product_in, scalar_only = _split_scalars(self.irreps_in, mixing_scalars)
        paths = [
            (i1, i2, mul, ir_out)
            for i1, (mul, ir1) in enumerate(self.irreps_product_in)
            for i2, (_, ir2) in enumerate(self.irreps_sh)
            for ir_out in ir1 * ir2
            if ir_out in wanted and not (i1 == scalar_only and ir_out.l > 0)
        ]
        # Messages ordered by irrep, so that the linear map after the sum sees one block per
        # irrep (e3nn's Linear slices its input per block, and each slice costs a zero
        # tensor of the whole input in the backward pass). Not when every scalar mixes (the
        # former architecture): that keeps the former layout, and its checkpoints load.
        if scalar_only is not None:
            paths.sort(key=lambda path: path[3])
        self.irreps_mid = o3.Irreps([(mul, ir_out) for _, _, mul, ir_out in paths])
        self.tensor_product = o3.TensorProduct(
            self.irreps_product_in,
            self.irreps_sh,
            self.irreps_mid,
            [(i1, i2, i_out, "uvu", True) for i_out, (i1, i2, _, _) in enumerate(paths)],
            shared_weights=False,
            internal_weights=False,
        )
        # the same product with fewer, larger tensor operations; the e3nn module above
        # defines it (and serves as the reference in tests)
        self.fused_product = ChannelwiseProduct(self.tensor_product)
        self.radial = FullyConnectedNet(
            [radial_basis, radial_hidden, self.tensor_product.weight_numel], nn.functional.silu
        )
        self.linear = o3.Linear(self.irreps_mid.simplify(), self.gate.irreps_in)
        self.self_connection = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == self.irreps_in

    def forward(self, x: Tensor, edge_index: Tensor, edge_vector: Tensor, edge_distance: Tensor) -> Tensor:
        return self.propagate(x, edge_index, *self.edge_terms(edge_vector, edge_distance))

    def edge_terms(self, edge_vector: Tensor, edge_distance: Tensor) -> tuple[Tensor, Tensor]:
        """The edges' spherical harmonics ``[E, irreps_sh.dim]`` and radial basis
        ``[E, radial_basis]``; they depend on the structure only, so an encoder computes
        them once for all its layers."""
        sh = o3.spherical_harmonics(self.irreps_sh, edge_vector, normalize=True, normalization="component")
        radial = soft_one_hot_linspace(
            edge_distance, 0.0, self.cutoff, self.radial_basis, basis="smooth_finite", cutoff=True
        ) * math.sqrt(self.radial_basis)
        return sh, radial

    def propagate(self, x: Tensor, edge_index: Tensor, sh: Tensor, radial: Tensor) -> Tensor:
        """The layer on precomputed :meth:`edge_terms`."""
        source, target = edge_index[0], edge_index[1]
        messages = self.fused_product(x, sh, self.radial(radial), source)
        aggregated = scatter(messages, target, x.shape[0], "sum") / math.sqrt(self.avg_neighbors)
        aggregated = self.fused_product.to_e3nn_layout(aggregated)
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
                mixing_scalars=config.mixing_scalars,
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
        edge_terms: dict[tuple[int, int, float], tuple[Tensor, Tensor]] = {}
        for layer in self.layers:
            setting = (layer.irreps_sh.lmax, layer.radial_basis, layer.cutoff)
            if setting not in edge_terms:
                edge_terms[setting] = layer.edge_terms(vector, distance)
            h = layer.propagate(h, batch.edge_index, *edge_terms[setting])
        node = self.readout(h[:, self.scalar_columns])
        graph = scatter(node, batch.batch, batch.num_graphs, "mean")
        # no residual from the inputs: the whole output is message passing
        return EncoderOutput(node=node, graph=graph, structure=node)
