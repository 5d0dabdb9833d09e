"""Property checks for encoders, for the authors of third-party encoders.

A protein's embedding should not depend on where the structure sits in space or how it is
oriented. :func:`assert_invariant` checks that for any :class:`protsteps.Encoder`::

    from protsteps_gnn.testing import assert_invariant
    assert_invariant(my_encoder, batch)            # raises AssertionError if not invariant

For the layers of an equivariant encoder use e3nn's ``e3nn.util.test.assert_equivariant``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from protsteps import Encoder
from protsteps.graph import Batch

__all__ = ["random_rotation", "rigid_motion", "assert_invariant"]


def random_rotation(generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """A ``[3, 3]`` rotation matrix drawn uniformly from SO(3) (determinant +1).

    QR decomposition of a Gaussian matrix, with the signs fixed so that the result is
    Haar-distributed, then a column flip if needed to exclude reflections.
    """
    gaussian = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def rigid_motion(
    batch: Batch,
    rotation: Tensor,
    translation: Tensor,
    edge_attr_irreps: str | None = None,
    node_attr_irreps: str | None = None,
) -> Batch:
    """The batch with every structure moved by ``x -> rotation @ x + translation``.

    Positions and backbone atoms are rotated and translated, edge vectors rotated, and
    ``edge_attr`` / ``node_attr`` transformed as their irreps say (the featurizer's
    ``edge_attr_irreps`` / ``node_attr_irreps``); distances and residue types stay, and so do
    dihedrals unless ``rotation`` is a reflection (determinant -1: a mirror image, where every
    dihedral changes sign). The input batch is not changed.

    Parameters
    ----------
    rotation: ``[3, 3]`` orthogonal matrix.
    translation: ``[3]`` (Å).
    edge_attr_irreps, node_attr_irreps:
        e3nn irreps strings in column order; needed when the batch has such features (a
        ``ValueError`` otherwise: leaving them as they are could hide a dependence on the
        orientation). ``"16x0e"`` declares invariant features.
    """
    dtype = batch.pos.dtype
    rotation64 = rotation.to(torch.float64)
    translation64 = translation.to(torch.float64).reshape(1, 3)
    pos = (batch.pos.to(torch.float64) @ rotation64.T + translation64).to(dtype)
    backbone = batch.backbone.to(torch.float64) @ rotation64.T + translation64
    # unobserved backbone atoms are stored as 0 and stay 0
    backbone = torch.where(batch.backbone_mask[..., None], backbone, torch.zeros_like(backbone)).to(dtype)
    edge_vector = (batch.edge_vector.to(torch.float64) @ rotation64.T).to(batch.edge_vector.dtype)
    return batch.replace(
        pos=pos,
        backbone=backbone,
        edge_vector=edge_vector,
        dihedrals=-batch.dihedrals if torch.linalg.det(rotation64) < 0 else batch.dihedrals,
        edge_attr=_transform("edge_attr", batch.edge_attr, edge_attr_irreps, rotation64),
        node_attr=_transform("node_attr", batch.node_attr, node_attr_irreps, rotation64),
    )


def _transform(name: str, features: Tensor, irreps: str | None, rotation: Tensor) -> Tensor:
    if features.shape[-1] == 0:
        return features
    if irreps is None:
        raise ValueError(
            f"the batch has {name} ({features.shape[-1]} columns): say how they transform, "
            f"{name}_irreps=featurizer.{name}_irreps (e3nn irreps, e.g. '16x0e' for invariant features)"
        )
    from e3nn import o3

    parsed = o3.Irreps(irreps)
    if parsed.dim != features.shape[-1]:
        raise ValueError(
            f"{name}_irreps {irreps!r} has dimension {parsed.dim}, {name} has {features.shape[-1]} columns"
        )
    matrix = parsed.D_from_matrix(rotation.to(torch.float64))
    return (features.to(torch.float64) @ matrix.T).to(features.dtype)


def assert_invariant(
    encoder: Encoder,
    batch: Batch,
    teacher_features: Tensor | None = None,
    atol: float = 1e-4,
    trials: int = 2,
    generator: torch.Generator | None = None,
    edge_attr_irreps: str | None = None,
    node_attr_irreps: str | None = None,
) -> float:
    """Assert that ``encoder``'s residue and protein embeddings do not change when every
    structure of ``batch`` is rotated and translated at random (:func:`rigid_motion`; a batch
    with ``edge_attr`` or ``node_attr`` needs their irreps, from the featurizer that made it).

    The encoder is run in eval mode (dropout off, batch norm on running statistics) without
    gradients; its training mode is restored afterwards.

    Returns
    -------
    The largest absolute difference seen (over ``node`` and ``graph``, all trials).

    Raises
    ------
    AssertionError naming the embedding and the difference when it exceeds ``atol``.
    """
    was_training = encoder.training
    encoder.eval()
    worst = 0.0
    try:
        with torch.no_grad():
            reference = encoder(batch, teacher_features)
            for trial in range(trials):
                rotation = random_rotation(generator)
                translation = 20.0 * torch.randn(3, generator=generator, dtype=torch.float64)
                moved_batch = rigid_motion(batch, rotation, translation, edge_attr_irreps, node_attr_irreps)
                moved = encoder(moved_batch, teacher_features)
                for name in ("node", "graph"):
                    difference = float((getattr(moved, name) - getattr(reference, name)).abs().max())
                    worst = max(worst, difference)
                    if not difference <= atol:
                        raise AssertionError(
                            f"{type(encoder).__name__} is not invariant: its {name} embedding changed "
                            f"by {difference:.3g} (> {atol:g}) under a rotation and translation "
                            f"(trial {trial})"
                        )
    finally:
        encoder.train(was_training)
    return worst
