r"""Node input features shared by the built-in encoders, public so that third-party
encoders build exactly the same inputs.

A residue's input is the concatenation

.. math::

    x_i = [\, t_i \;;\; \mathrm{enc}(\phi_i) \;;\; \mathrm{enc}(\psi_i) \;(;\; \mathrm{enc}(\omega_i))\,]

where :math:`t_i` is the teacher's embedding of residue :math:`i` (or, without a teacher, a
one-hot or learned embedding of its residue type) and, for an angle :math:`\alpha` in
radians that is defined and visible to the encoder (``dihedral_input_mask``),

.. math::

    \mathrm{enc}(\alpha) = [\sin\alpha,\; \cos\alpha,\; b_1(\alpha), \dots, b_K(\alpha)],
    \qquad
    b_k(\alpha) = \frac{1}{1.12}\sum_{n \in \{-1, 0, 1\}}
        \exp\!\Big(-\Big(\frac{\alpha + 2\pi n - c_k}{\Delta}\Big)^2\Big),

with :math:`K` centres :math:`c_k = -\pi + k\Delta`, :math:`\Delta = 2\pi / K`, spread over
:math:`[-\pi, \pi)` (the Gaussian basis of e3nn's ``soft_one_hot_linspace``). Summing the
three periodic images makes the basis continuous across :math:`\pm\pi`, where
:math:`\phi = 179°` and :math:`\phi = -179°` are neighbours. Where the angle is undefined
(chain ends, gaps) or hidden (masked by the dihedral task) the whole block is 0: a vector a
real angle can never produce, since :math:`\sin^2 + \cos^2 = 1`.

The released STEPS code fed angles in degrees/180 to 128 Gaussians centred over
:math:`[-\pi, \pi]`; values in :math:`[-1, 1]` only reach the middle third of those centres
and no angle wraps around. That is the defect this encoding fixes. The released encoding is
kept as ``encoding = "paper"`` (:func:`paper_angle_encoding`) for faithful runs:

.. math::

    \mathrm{enc}_{paper}(\alpha) = [\, e^{-10 (a - c_1)^2}, \dots, e^{-10 (a - c_K)^2} \,],
    \qquad a = \alpha / \pi \;(= \text{degrees} / 180), \quad
    c_k = -\pi + (k - 1) \frac{2\pi}{K - 1},

with no sin/cos columns. :math:`a` stays in :math:`[-1, 1]`, so only the centres near the
middle ever fire (52 of 128 reach 0.5) and -179° and 179° are encoded far apart.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from protsteps.graph import ALPHABET, Batch

__all__ = [
    "ANGLE_INDEX",
    "AngleSet",
    "ResidueFeatures",
    "AngleEncoding",
    "angle_encoding",
    "angle_encoding_width",
    "paper_angle_encoding",
    "NodeInput",
]

#: column of each backbone dihedral in ``dihedrals`` / ``dihedral_mask``
ANGLE_INDEX = {"phi": 0, "psi": 1, "omega": 2}

AngleSet = Literal["phi_psi", "phi_psi_omega", "none"]
AngleEncoding = Literal["periodic", "paper"]
ResidueFeatures = Literal["one_hot", "embedding"]

_ANGLE_COLUMNS: dict[str, tuple[int, ...]] = {"phi_psi": (0, 1), "phi_psi_omega": (0, 1, 2), "none": ()}


#: sharpness of the released code's Gaussians: exp(-10 (a - c)^2)
PAPER_ANGLE_GAMMA = 10.0


def _exp_neg(square: Tensor) -> Tensor:
    """``exp(-square)``, flushed to 0 where it would be below the smallest normal float
    (``square`` above 87 in float32, 708 in float64). There ``exp`` takes a slow path on CPU
    (a basis function far from its centre cost ~80x one near it, most of the node input's
    time) for a value that differs from 0 by less than 1.2e-38."""
    if square.dtype not in (torch.float32, torch.float64):
        return torch.exp(-square)
    bound = math.floor(-math.log(torch.finfo(square.dtype).tiny))
    far = square > bound
    return torch.exp(-square.clamp_max(bound)).masked_fill_(far, 0.0)


def _gaussian_basis(x: Tensor, start: float, end: float, number: int) -> Tensor:
    """``[..., number]`` Gaussians ``exp(-((x - c_k) / Δ)^2) / 1.12`` on ``number`` centres
    ``c_k`` from ``start`` to ``end`` spaced ``Δ`` (e3nn's ``soft_one_hot_linspace`` with
    ``basis="gaussian"``, ``cutoff=False``)."""
    centres = torch.linspace(start, end, number, dtype=x.dtype, device=x.device)
    step = centres[1] - centres[0]
    return _exp_neg(((x[..., None] - centres) / step).square()).div(1.12)


def angle_encoding_width(
    num_basis: int, angles: AngleSet = "phi_psi", encoding: AngleEncoding = "periodic"
) -> int:
    """Width of the angle encoding: ``len(angles) * (2 + num_basis)`` (:func:`angle_encoding`)
    or ``len(angles) * num_basis`` (:func:`paper_angle_encoding`)."""
    per_angle = num_basis if encoding == "paper" else 2 + num_basis
    return len(_ANGLE_COLUMNS[angles]) * per_angle


def _check_angle_inputs(dihedrals: Tensor, mask: Tensor, num_basis: int) -> None:
    if num_basis < 2:
        raise ValueError(f"angle encoding needs num_basis >= 2, got {num_basis}")
    if dihedrals.dim() != 2 or dihedrals.shape[1] != 3 or mask.shape != dihedrals.shape:
        raise ValueError(
            f"dihedrals and mask must both be [N, 3], got {tuple(dihedrals.shape)} and {tuple(mask.shape)}"
        )


def paper_angle_encoding(
    dihedrals: Tensor,
    mask: Tensor,
    num_basis: int = 128,
    angles: AngleSet = "phi_psi",
) -> Tensor:
    """The released STEPS code's angle encoding (see the module docstring).

    Parameters
    ----------
    dihedrals:
        ``[N, 3] float``, phi, psi, omega in radians in [-π, π].
    mask:
        ``[N, 3] bool``, which angles the encoder may see; the encoding of every other
        angle is 0 (the released code zeroed masked residues' features the same way).
    num_basis:
        ``K`` centres spread over [-π, π], both ends included (the released code: 128).
    angles:
        Which dihedrals to encode.

    Returns
    -------
    ``[N, A * K] float``, for each angle in order ``exp(-10 (α/π - c_k)^2)``.

    Examples
    --------
    >>> a = torch.linspace(-math.pi, math.pi, 721)  # every angle, 0.5° apart
    >>> enc = paper_angle_encoding(torch.stack([a, a, a], 1), torch.ones(721, 3, dtype=torch.bool))
    >>> int((enc[:, :128].max(dim=0).values > 0.5).sum())  # centres any angle brings above 0.5
    52
    """
    _check_angle_inputs(dihedrals, mask, num_basis)
    columns = list(_ANGLE_COLUMNS[angles])
    scaled = dihedrals[:, columns] / math.pi
    centres = torch.linspace(-math.pi, math.pi, num_basis, dtype=scaled.dtype, device=scaled.device)
    blocks = _exp_neg(PAPER_ANGLE_GAMMA * (scaled[..., None] - centres).square())
    blocks = blocks * mask[:, columns, None].to(blocks.dtype)
    return blocks.reshape(dihedrals.shape[0], -1)


def angle_encoding(
    dihedrals: Tensor,
    mask: Tensor,
    num_basis: int = 16,
    angles: AngleSet = "phi_psi",
) -> Tensor:
    """Encode backbone dihedrals as sin/cos plus a periodic Gaussian basis.

    Parameters
    ----------
    dihedrals:
        ``[N, 3] float``, phi, psi, omega in radians (any range; they are wrapped).
    mask:
        ``[N, 3] bool``, which angles the encoder may see (``batch.dihedral_input_mask``);
        the encoding of every other angle is 0.
    num_basis:
        Gaussians per angle (K >= 2), centred every 2π/K over [-π, π).
    angles:
        ``"phi_psi"`` (as in the paper), ``"phi_psi_omega"``, or ``"none"`` (no columns:
        dihedrals change sign in a mirror image, so an encoder that must not tell a
        structure from its mirror image cannot take them as plain scalars).

    Returns
    -------
    ``[N, A * (2 + K)] float``, for each angle in order ``[sin, cos, b_1..b_K]``.

    Examples
    --------
    >>> x = torch.tensor([[math.pi - 1e-4, 0.0, 0.0], [-math.pi + 1e-4, 0.0, 0.0]])
    >>> enc = angle_encoding(x, torch.ones(2, 3, dtype=torch.bool), num_basis=8)
    >>> bool(torch.allclose(enc[0, 2:10], enc[1, 2:10], atol=1e-3))  # continuous across ±π
    True
    """
    _check_angle_inputs(dihedrals, mask, num_basis)
    columns = list(_ANGLE_COLUMNS[angles])
    alpha = dihedrals[:, columns]
    alpha = torch.remainder(alpha + math.pi, 2 * math.pi) - math.pi
    step = 2 * math.pi / num_basis
    # the three images alpha - 2π, alpha, alpha + 2π in one pass ([N, A, 3, K]), added in
    # that order: the same values as three calls summed, with a third of the operator calls
    shifts = torch.tensor([-2 * math.pi, 0.0, 2 * math.pi], dtype=alpha.dtype, device=alpha.device)
    images = _gaussian_basis(alpha[..., None] + shifts, -math.pi, math.pi - step, num_basis)
    basis = images[..., 0, :] + images[..., 1, :] + images[..., 2, :]
    blocks = torch.cat([torch.sin(alpha)[..., None], torch.cos(alpha)[..., None], basis], dim=-1)
    blocks = blocks * mask[:, columns, None].to(blocks.dtype)
    return blocks.reshape(dihedrals.shape[0], -1)


class NodeInput(nn.Module):
    """Builds encoder inputs ``[teacher or residue type ; angle encoding]``.

    Parameters
    ----------
    teacher_dim:
        Width of the teacher's per-residue features, or ``None`` without a teacher (then the
        residue type is encoded instead).
    residue_features:
        Without a teacher: ``"one_hot"`` (21 columns, as in the paper) or ``"embedding"``
        (a learned ``nn.Embedding`` of width ``residue_embedding_dim``).
    residue_embedding_dim:
        Width of the learned residue-type embedding.
    angle_basis:
        Gaussians per angle in :func:`angle_encoding`.
    angles:
        Which dihedrals to encode.
    angle_encoding:
        ``"periodic"`` (:func:`angle_encoding`) or ``"paper"`` (:func:`paper_angle_encoding`).

    Attributes
    ----------
    out_dim: width of the returned features.
    """

    def __init__(
        self,
        teacher_dim: int | None,
        residue_features: ResidueFeatures = "one_hot",
        residue_embedding_dim: int = 32,
        angle_basis: int = 16,
        angles: AngleSet = "phi_psi",
        angle_encoding: AngleEncoding = "periodic",
    ) -> None:
        super().__init__()
        if teacher_dim is not None and teacher_dim <= 0:
            raise ValueError(f"teacher_dim must be positive, got {teacher_dim}")
        self.teacher_dim = teacher_dim
        self.residue_features = residue_features
        self.angle_basis = angle_basis
        self.angles: AngleSet = angles
        self.angle_encoding: AngleEncoding = angle_encoding
        self.residue_embedding: nn.Embedding | None = None
        if teacher_dim is not None:
            residue_width = teacher_dim
        elif residue_features == "embedding":
            self.residue_embedding = nn.Embedding(len(ALPHABET), residue_embedding_dim)
            residue_width = residue_embedding_dim
        else:
            residue_width = len(ALPHABET)
        self.out_dim = residue_width + angle_encoding_width(angle_basis, angles, angle_encoding)

    def residue_part(self, batch: Batch, teacher_features: Tensor | None) -> Tensor:
        """``[N, teacher_dim or residue width] float``: the non-angle part of the input."""
        if self.teacher_dim is not None:
            if teacher_features is None:
                raise ValueError(
                    f"this encoder was built for a teacher of width {self.teacher_dim} "
                    "but was called without teacher features"
                )
            if tuple(teacher_features.shape) != (batch.num_nodes, self.teacher_dim):
                raise ValueError(
                    f"teacher features have shape {tuple(teacher_features.shape)}, expected "
                    f"[{batch.num_nodes}, {self.teacher_dim}] (one row per residue of the batch)"
                )
            return teacher_features
        if teacher_features is not None:
            raise ValueError(
                "this encoder was built without a teacher (context.teacher_dim is None) "
                "but was called with teacher features; build it with the teacher's width"
            )
        if self.residue_embedding is not None:
            return self.residue_embedding(batch.residue_type)
        dtype = batch.pos.dtype if batch.pos.is_floating_point() else torch.get_default_dtype()
        return nn.functional.one_hot(batch.residue_type, len(ALPHABET)).to(dtype)

    def forward(self, batch: Batch, teacher_features: Tensor | None = None) -> Tensor:
        """``[N, out_dim] float`` input features of the batch's residues."""
        residue = self.residue_part(batch, teacher_features)
        encode = paper_angle_encoding if self.angle_encoding == "paper" else angle_encoding
        angle = encode(batch.dihedrals, batch.dihedral_input_mask, self.angle_basis, self.angles)
        return torch.cat([residue, angle.to(residue.dtype)], dim=-1)
