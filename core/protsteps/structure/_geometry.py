"""Backbone geometry: peptide bonds and the phi, psi, omega dihedrals, vectorized.

Conventions (IUPAC-IUB 1970, the ones Bio.PDB and PyMOL use), for residue ``i``:

- phi_i   = dihedral(C_{i-1}, N_i, CA_i, C_i)
- psi_i   = dihedral(N_i, CA_i, C_i, N_{i+1})
- omega_i = dihedral(CA_{i-1}, C_{i-1}, N_i, CA_i)   (the peptide bond before residue i)

An angle is defined only when its four atoms were observed and, where it spans two
residues, the two are bonded: the C_{i-1}-N_i distance is at most ``max_peptide_bond``.
A chain break (missing residues that leave the chain in two pieces, or a residue whose N or C
was not observed) therefore masks phi and omega after it and psi before it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_PEPTIDE_BOND", "peptide_bonds", "dihedral", "backbone_dihedrals"]

#: longest C-N distance (Å) still read as a peptide bond. The ideal bond is 1.33 Å; low
#: resolution models stretch it past 1.5 Å, while the shortest real gap (one missing
#: residue) leaves more than 2.5 Å.
MAX_PEPTIDE_BOND = 2.0

_N, _CA, _C = 0, 1, 2


def peptide_bonds(backbone: np.ndarray, mask: np.ndarray, max_bond: float = MAX_PEPTIDE_BOND) -> np.ndarray:
    """Which consecutive residues are joined by a peptide bond.

    Parameters
    ----------
    backbone: [L, 4, 3] float, N, CA, C, O coordinates.
    mask: [L, 4] bool, which of those atoms were observed.
    max_bond: longest C_i-N_{i+1} distance counted as a bond (Å).

    Returns
    -------
    bonded: [L - 1] bool, ``bonded[i]`` says residue i is bonded to residue i + 1
    (both atoms observed and the distance at most ``max_bond``).
    """
    backbone = np.asarray(backbone, dtype=np.float64)
    if len(backbone) < 2:
        return np.zeros(0, dtype=bool)
    step = backbone[1:, _N] - backbone[:-1, _C]
    step *= step
    gap = np.sqrt(np.add.reduce(step, axis=-1))  # np.linalg.norm's own sum, without its checks
    with np.errstate(invalid="ignore"):
        return _bonded(mask, gap, max_bond)


def _bonded(mask: np.ndarray, gap: np.ndarray, max_bond: float) -> np.ndarray:
    """[L - 1] bool: C_i and N_{i+1} both observed and ``gap`` [L - 1], their distance, at
    most ``max_bond`` (the rule of :func:`peptide_bonds`, for callers that have the gaps)."""
    return mask[1:, _N] & mask[:-1, _C] & (gap <= max_bond)


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Dihedral angles (radians, in (-pi, pi]) of point quadruples.

    With b0 = p1 - p0, b1 = p2 - p1, b2 = p3 - p2:
    ``atan2(|b1| b0 . (b1 x b2), (b0 x b1) . (b1 x b2))``, positive when, looking along b1,
    the far bond is turned clockwise from the near one.

    p0, p1, p2, p3: [..., 3] float. Returns [...] float64.
    """
    b0 = np.asarray(p1, np.float64) - p0
    b1 = np.asarray(p2, np.float64) - p1
    b2 = np.asarray(p3, np.float64) - p2
    n1 = _cross(b0, b1)
    n2 = _cross(b1, b2)
    y = np.sqrt((b1 * b1).sum(-1)) * (b0 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    return np.arctan2(y, x)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.cross spends most of its time moving axes on small arrays (and np.stack a good
    # part of the rest: the components are written in place)
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    np.subtract(ay * bz, az * by, out=out[..., 0])
    np.subtract(az * bx, ax * bz, out=out[..., 1])
    np.subtract(ax * by, ay * bx, out=out[..., 2])
    return out


def backbone_dihedrals(
    backbone: np.ndarray, mask: np.ndarray, max_bond: float = MAX_PEPTIDE_BOND
) -> tuple[np.ndarray, np.ndarray]:
    """phi, psi and omega of every residue, with the mask of those that are defined.

    Parameters
    ----------
    backbone: [L, 4, 3] float, N, CA, C, O coordinates.
    mask: [L, 4] bool, which of those atoms were observed.
    max_bond: see :func:`peptide_bonds`.

    Returns
    -------
    angles: [L, 3] float64, (phi, psi, omega) in radians, 0 where undefined.
    defined: [L, 3] bool.
    """
    backbone = np.asarray(backbone, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    length = len(backbone)
    angles = np.zeros((length, 3), dtype=np.float64)
    defined = np.zeros((length, 3), dtype=bool)
    if length < 2:
        return angles, defined
    # The three angles are consecutive dihedrals of the backbone trace N0 CA0 C0 N1 CA1 C1 ...:
    # dihedral k spans atoms k..k+3, so k = 3i is psi_i, 3i + 1 omega_{i+1}, 3i + 2 phi_{i+1}.
    # One pass over the trace's bonds and their normals computes all of them, each with
    # exactly the operations :func:`dihedral` applies to its four points. The trace is one
    # row per coordinate ([3, 3L]): every step works on whole rows, without sums over an
    # axis of three (which numpy makes row by row); sums are in the order ``sum(-1)`` adds.
    trace = np.ascontiguousarray(backbone[:, :3].reshape(-1, 3).T)
    bx, by, bz = trace[:, 1:] - trace[:, :-1]  # the trace's bonds
    nx = by[:-1] * bz[1:] - bz[:-1] * by[1:]
    ny = bz[:-1] * bx[1:] - bx[:-1] * bz[1:]
    nz = bx[:-1] * by[1:] - by[:-1] * bx[1:]
    # bond 3i + 2 is C_i -> N_{i+1}, the peptide bond: its length as peptide_bonds takes it
    length_of = np.sqrt(bx * bx + by * by + bz * bz)
    bonded = _bonded(mask, length_of[2::3], max_bond)
    # (+ 0.0: ``sum(-1)`` starts from +0.0, so three products of -0.0 sum to +0.0 there, and
    # atan2 tells the two zeros apart: pi against -pi in a planar backbone)
    y = length_of[1:-1] * (bx[:-2] * nx[1:] + by[:-2] * ny[1:] + bz[:-2] * nz[1:] + 0.0)
    x = nx[:-1] * nx[1:] + ny[:-1] * ny[1:] + nz[:-1] * nz[1:] + 0.0
    along = np.arctan2(y, x)  # [3L - 3]
    psi, omega, phi = along[0::3], along[1::3], along[2::3]
    phi_ok = bonded & mask[1:, _CA] & mask[1:, _C] & np.isfinite(phi)
    psi_ok = bonded & mask[:-1, _N] & mask[:-1, _CA] & np.isfinite(psi)
    omega_ok = bonded & mask[:-1, _CA] & mask[1:, _CA] & np.isfinite(omega)
    np.copyto(angles[1:, 0], phi, where=phi_ok)
    np.copyto(angles[:-1, 1], psi, where=psi_ok)
    np.copyto(angles[1:, 2], omega, where=omega_ok)
    defined[1:, 0] = phi_ok
    defined[:-1, 1] = psi_ok
    defined[1:, 2] = omega_ok
    return angles, defined
