r"""The paper's encoder: graph isomorphism layers with distance-weighted sum aggregation.

Layer :math:`\ell` maps :math:`h^{\ell-1}` (with :math:`h^0 = x`, the node inputs) to

.. math::

    u^{\ell}_i = W_\ell \Big((1 + \epsilon_\ell)\, h^{\ell-1}_i + \sum_{j \in \mathcal{N}(i)} w_{ij}\, h^{\ell-1}_j\Big) + b_\ell,
    \qquad w_{ij} = \frac{1}{d_{ij}^2 + 10^{-6}},

with :math:`\epsilon_\ell = 0` in the paper and a learned scalar (starting at 0) with
``learn_eps`` (GIN-ε of Xu et al., 2019), followed, between layers only, by normalisation, activation and dropout:
:math:`h^\ell = \mathrm{drop}(\sigma(\mathrm{norm}(u^\ell)))` for :math:`\ell < L` and
:math:`h^L = u^L`. The residue embedding is :math:`z_i = h^L_i + P x_i` (``residual``), with
:math:`P` the identity when ``hidden_dim`` equals the input width and a learned linear map
(no bias) otherwise; the protein embedding is the mean of :math:`z_i` over its residues.

With ``activation = "none"`` and ``norm = "none"`` the encoder is linear, as in the released
STEPS code. Why the defaults differ from the paper's weights: :math:`1/d^2` in Å\ :sup:`-2`
is small (a neighbour at 5 Å weighs 0.04, a residue's ~8 neighbours together ~0.3, against
1 for the residue itself) and both terms live in the same input space, so the layer output
is dominated by the residue's own features. The default ``relative_inverse_square`` keeps
the paper's shape and measures distances in units of the CA-CA virtual bond,
:math:`w_{ij} = 3.8^2 / (d_{ij}^2 + 10^{-6})` (1 for consecutive residues, 0.29 at 7 Å),
and ``learn_eps`` lets each layer rebalance the residue against its neighbourhood. Without
a teacher, on held-out structures, the paper's scale leaves the distance task at the
majority bin and the default beats it by about 6 points (``docs/encoders_tasks.md``). Because :math:`W_\ell` is linear, :math:`W(h_i + \sum_j w_{ij} h_j) = Wh_i +
\sum_j w_{ij} (Wh)_j`; the layer applies :math:`W` before aggregating whenever that makes the
per-edge messages narrower (wide teacher inputs), which changes the cost, not the result.
The neighbour sum :math:`\sum_j w_{ij} h_j` is the product of :math:`h` with the sparse
weighted adjacency matrix (:class:`protsteps.scatter.WeightedAdjacency`), built once per
batch and shared by the layers, which adds the self term :math:`(1 + \epsilon_\ell) h_i` as it
writes (:meth:`~protsteps.scatter.WeightedAdjacency.aggregate`); ``PROTSTEPS_AGGREGATION=scatter``
selects the gather-scatter path instead (the same result up to float rounding).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from protsteps import BuildContext, Encoder, EncoderOutput, option
from protsteps.graph import Batch
from protsteps.scatter import WeightedAdjacency, scatter

from ._config import MAX_LAYERS, MAX_WIDTH, NodeInputConfig, node_input

__all__ = ["GINConfig", "GINEncoder", "GINLayer"]

Activation = Literal["none", "relu", "gelu", "silu"]
Norm = Literal["none", "layer", "batch"]
Residual = Literal["always", "with_teacher", "never"]
EdgeWeight = Literal["inverse_square", "relative_inverse_square", "uniform"]

#: CA-CA distance of consecutive residues (Å), the unit of ``relative_inverse_square``
CA_CA_BOND = 3.8

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


@dataclasses.dataclass
class GINConfig(NodeInputConfig):
    """Settings of the ``gin`` encoder. :meth:`paper` gives the released code's settings."""

    hidden_dim: int = option(
        256,
        "Width of every layer and of the embeddings (0: the input width, as in the paper).",
        minimum=0,
        maximum=MAX_WIDTH,
    )
    num_layers: int = option(2, "Number of GIN layers (the paper used 2).", minimum=1, maximum=MAX_LAYERS)
    activation: Activation = option(
        "gelu", "Nonlinearity between layers ('none' reproduces the paper's linear GNN)."
    )
    norm: Norm = option("layer", "Normalisation between layers: none (paper), layer or batch norm.")
    dropout: float = option(0.0, "Dropout between layers (uses torch's global RNG).")
    residual: Residual = option(
        "always",
        "Add the (projected) input to the output: always, with_teacher (paper: only with a teacher) or never.",
    )
    detach_input: bool = option(
        False, "Feed a detached copy of the input to the first layer, as the released code did."
    )
    learn_eps: bool = option(
        True,
        "Learn the weight (1 + eps) of a residue's own state in each layer (GIN-eps); the paper fixed eps = 0.",
    )
    edge_weight: EdgeWeight = option(
        "relative_inverse_square",
        "Message weight: inverse_square 1/(d^2 + 1e-6) (paper, d in Å), relative_inverse_square "
        "3.8^2/(d^2 + 1e-6) (same shape, 1 for consecutive residues) or uniform 1.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_dim < 0:
            raise ValueError(f"hidden_dim must be >= 0, got {self.hidden_dim}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def paper(cls) -> GINConfig:
        """The released STEPS code: two linear GIN layers as wide as their input, no
        normalisation, a residual only with a teacher, a detached input to the first layer.

        The released angle encoding (degrees/180 on 128 Gaussians) is not reproduced: see
        :mod:`protsteps_gnn.features`.
        """
        return cls(
            hidden_dim=0,
            num_layers=2,
            activation="none",
            norm="none",
            dropout=0.0,
            residual="with_teacher",
            detach_input=True,
            learn_eps=False,
            edge_weight="inverse_square",
            residue_features="one_hot",
        )


def edge_weights(edge_distance: Tensor, kind: EdgeWeight = "inverse_square") -> Tensor:
    """``[E] float`` message weights: ``1 / (d^2 + 1e-6)`` (d in Å, the paper),
    ``3.8^2 / (d^2 + 1e-6)`` (the same shape, 1 for consecutive residues) or ones."""
    if kind == "uniform":
        return torch.ones_like(edge_distance)
    weight = 1.0 / (edge_distance.square() + 1e-6)
    return weight * CA_CA_BOND**2 if kind == "relative_inverse_square" else weight


def row_major_transpose(weight: Tensor) -> Tensor:
    """``weight.T`` copied into row-major order, for ``x @ weight.T`` when ``x`` is narrower
    than the output (``[N, 57] -> [N, 256]``, the node input without a teacher).

    Autograd computes the gradient of a product with a column-major matrix (``weight.T``
    of a contiguous weight) as ``(grad^T @ x)^T`` (``[256, N] x [N, 57]``), and with a
    row-major one as ``x^T @ grad`` (``[57, N] x [N, 256]``), which MKL runs faster here:
    a 57 -> 256 layer's forward and weight gradient take 1.30-1.36 instead of 1.52 ms at
    N = 1,500, the same values bit for bit. At equal or larger input widths it gains
    nothing, so it is used only for narrow inputs."""
    return weight.T.contiguous()


class GINLayer(nn.Module):
    r"""One layer :math:`W((1 + \epsilon) h_i + \sum_j w_{ij} h_j) + b` with sum aggregation.

    Parameters
    ----------
    in_dim, out_dim: widths of :math:`h` and of the output.
    learn_eps: learn :math:`\epsilon` (starting at 0) instead of fixing it at 0.
    """

    def __init__(self, in_dim: int, out_dim: int, learn_eps: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.project_first = out_dim < in_dim
        self.narrow_input = in_dim < out_dim
        self.eps: nn.Parameter | None = nn.Parameter(torch.zeros(())) if learn_eps else None

    def forward(
        self,
        h: Tensor,
        edge_index: Tensor,
        weight: Tensor,
        adjacency: WeightedAdjacency | None = None,
    ) -> Tensor:
        """``h: [N, in_dim]``, ``edge_index: [2, E]`` (source, target), ``weight: [E]`` ->
        ``[N, out_dim]``. ``adjacency``: the same edges and weights already built (shared by
        the layers of an encoder); made here when not given."""
        if adjacency is None:
            adjacency = WeightedAdjacency(edge_index, weight, h.shape[0])
        self_weight = 1.0 if self.eps is None else 1.0 + self.eps
        if self.project_first:
            projected = h @ self.linear.weight.T
            return adjacency.aggregate(projected, self_weight) + self.linear.bias
        aggregated = adjacency.aggregate(h, self_weight)
        if self.narrow_input:
            return torch.addmm(self.linear.bias, aggregated, row_major_transpose(self.linear.weight))
        return self.linear(aggregated)


class GINEncoder(Encoder):
    """The ``gin`` encoder: STEPS' GIN with configurable depth, width and nonlinearity.

    Parameters
    ----------
    config: a :class:`GINConfig`.
    context: ``context.teacher_dim`` is the teacher's width, or ``None`` without a teacher.

    ``forward(batch, teacher_features)`` returns ``node: [N, out_dim]``,
    ``graph: [B, out_dim]`` (mean of ``node`` over each protein's residues) and
    ``structure: [N, out_dim]``, the last layer's output :math:`h^L` before the residual
    (STEPS' structure view).
    """

    requires: ClassVar[frozenset[str]] = frozenset(
        {"residue_type", "dihedrals", "edge_index", "edge_distance"}
    )

    def __init__(self, config: GINConfig, context: BuildContext) -> None:
        super().__init__()
        self.config = config
        self.inputs = node_input(config, context.teacher_dim)
        in_dim = self.inputs.out_dim
        hidden = config.hidden_dim or in_dim
        self.out_dim = hidden
        self.structure_dim = hidden
        widths = [in_dim] + [hidden] * config.num_layers
        self.layers = nn.ModuleList(GINLayer(a, b, config.learn_eps) for a, b in itertools.pairwise(widths))
        self.between = nn.ModuleList(self._between(hidden) for _ in range(config.num_layers - 1))
        use_residual = config.residual == "always" or (
            config.residual == "with_teacher" and context.teacher_dim is not None
        )
        self.residual: nn.Module | None = None
        if use_residual:
            self.residual = nn.Identity() if in_dim == hidden else nn.Linear(in_dim, hidden, bias=False)

    def _between(self, width: int) -> nn.Sequential:
        norms: dict[str, nn.Module] = {
            "none": nn.Identity(),
            "layer": nn.LayerNorm(width),
            "batch": nn.BatchNorm1d(width),
        }
        return nn.Sequential(
            norms[self.config.norm], _ACTIVATIONS[self.config.activation](), nn.Dropout(self.config.dropout)
        )

    def forward(self, batch: Batch, teacher_features: Tensor | None = None) -> EncoderOutput:
        x = self.inputs(batch, teacher_features)
        weight = edge_weights(batch.edge_distance.to(x.dtype), self.config.edge_weight)
        adjacency = WeightedAdjacency(batch.edge_index, weight, batch.num_nodes)
        h = x.detach() if self.config.detach_input else x
        for index, layer in enumerate(self.layers):
            h = layer(h, batch.edge_index, weight, adjacency)
            if index < len(self.between):
                h = self.between[index](h)
        if isinstance(self.residual, nn.Linear) and self.residual.bias is None:
            # h + x P^T in one product that adds as it writes
            weight = self.residual.weight
            narrow = weight.shape[1] < weight.shape[0]
            node = torch.addmm(h, x, row_major_transpose(weight) if narrow else weight.T)
        else:
            node = h if self.residual is None else h + self.residual(x)
        graph = scatter(node, batch.batch, batch.num_graphs, "mean")
        return EncoderOutput(node=node, graph=graph, structure=h)
