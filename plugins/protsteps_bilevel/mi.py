r"""The mutual-information bound between the sequence and structure views.

For a batch of B proteins with sequence embeddings :math:`s_i` (mean of the teacher's
residue embeddings) and structure embeddings :math:`g_i` (the encoder's protein embedding),
a critic :math:`T(s, g) = \langle f_s(s), f_g(g) \rangle` scores every pair. The
Jensen-Shannon (Deep InfoMax) bound is maximised by minimising

.. math::

    L_{MI} = \frac{1}{B}\sum_i \operatorname{softplus}(-T(s_i, g_i))
           + \frac{1}{B(B-1)}\sum_{i \ne j} \operatorname{softplus}(T(s_i, g_j)),

with the other proteins of the batch as negatives. It needs B >= 2. The released code ran at
batch size 1 and appended the previous protein's detached embeddings to make B = 2 (on the
very first protein the negative term was the mean of an empty set, NaN, whose gradient is
still finite); the pseudo bi-level scheme's ``negatives = "previous"`` does the same.

Two shapes of projection :math:`f`: :class:`ResidualProjection` (ours) and
:class:`PaperProjection`, the released code's ``NodeEmb``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ResidualProjection(nn.Module):
    """x -> W2 ReLU(W1 x) + W0 x: a small residual MLP."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.skip = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x) + self.skip(x)


class PaperProjection(nn.Module):
    """The released code's projection: ``r = ReLU(W1 x + pad(x))``, ``ReLU(W2 r + r)``, where
    ``pad`` appends zeros to reach the output width (which must be at least the input's)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim < in_dim:
            raise ValueError(f"the paper's projection widens its input: out_dim {out_dim} < in_dim {in_dim}")
        self.first = nn.Linear(in_dim, out_dim)
        self.second = nn.Linear(out_dim, out_dim)
        self.padding = out_dim - in_dim

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.relu(self.first(x) + F.pad(x, (0, self.padding)))
        return torch.relu(self.second(hidden) + hidden)


Projection = Literal["residual_mlp", "paper"]


class Critic(nn.Module):
    """T(s, g) = <f_s(s), f_g(g)> for every pair of a batch.

    s: [B, sequence_dim], g: [B, structure_dim] -> scores [B, B], scores[i, j] = T(s_i, g_j).
    ``projection = "paper"`` uses :class:`PaperProjection` (``hidden_dim`` is not used and
    ``out_dim`` must be at least both input widths).
    """

    def __init__(
        self,
        sequence_dim: int,
        structure_dim: int,
        hidden_dim: int,
        out_dim: int,
        projection: Projection = "residual_mlp",
    ) -> None:
        super().__init__()
        self.f_s: nn.Module
        self.f_g: nn.Module
        if projection == "paper":
            self.f_s = PaperProjection(sequence_dim, out_dim)
            self.f_g = PaperProjection(structure_dim, out_dim)
        else:
            self.f_s = ResidualProjection(sequence_dim, hidden_dim, out_dim)
            self.f_g = ResidualProjection(structure_dim, hidden_dim, out_dim)

    def forward(self, s: Tensor, g: Tensor) -> Tensor:
        return scores_of(*self.project(s, g))

    def project(self, s: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """The projections ``f_s(s)``: [B, out_dim] and ``f_g(g)``: [B, out_dim]."""
        return self.f_s(s), self.f_g(g)


def scores_of(projected_s: Tensor, projected_g: Tensor) -> Tensor:
    """Scores [B, B] from projected views: ``scores[i, j] = <f_s(s_i), f_g(g_j)>``."""
    return projected_s @ projected_g.transpose(0, 1)


def silent_bound(critic: Critic, s: Tensor, g: Tensor) -> tuple[float, bool, bool]:
    r"""The bound :math:`L_{MI}` of ``critic`` on the views ``s``, ``g`` (taken as constants),
    whether it passes **no** gradient to either view (every element of
    :math:`\partial L_{MI}/\partial s` and :math:`\partial L_{MI}/\partial g` exactly 0), and
    whether every pair scores exactly 0.

    A silent bound gives the look-ahead nothing (:math:`\theta' = \theta`: its inner gradient
    reaches the teacher only through ``s``) and the student nothing through the critic. The
    released critic goes silent at its learning rate: its projections end in ReLU, and once
    the units the sequence view activates and those the structure view activates have none in
    common, every pair scores 0 (:math:`L_{MI} = 2 \ln 2`) and every unit a view would need
    is inactive, so no gradient flows to either view nor to the critic itself."""
    s = s.detach().requires_grad_(True)
    g = g.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = scores_of(*critic.project(s, g))
        loss = jensen_shannon_loss(scores)
        grad_s, grad_g = torch.autograd.grad(loss, [s, g])
    return float(loss.detach()), not (bool(grad_s.any()) or bool(grad_g.any())), not bool(scores.any())


def jensen_shannon_loss(scores: Tensor) -> Tensor:
    """L_MI of the module docstring from critic scores [B, B] (B >= 2)."""
    b = scores.shape[0]
    if b < 2 or scores.shape != (b, b):
        raise ValueError(
            f"the MI bound needs a square score matrix of at least 2 proteins, got {tuple(scores.shape)}"
        )
    positive = torch.diagonal(scores)
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=scores.device)
    negative = scores[off_diagonal]
    return F.softplus(-positive).mean() + F.softplus(negative).mean()
