"""The ``residue_graph`` featurizer: one node per residue, edges by distance and sequence.

Nodes are the chain's residues with a CA atom, positioned at CA (as in STEPS). Edges join
residues by any combination of three rules, deduplicated:

- ``radius``: CA-CA distance below ``radius`` (7 Å, the paper's graph),
- ``knn``: each residue's ``knn`` nearest residues,
- ``sequential``: residues at most ``sequential`` positions apart in chain order.

Edge features (``edge_attr``) are optional: ``rbf`` radial basis functions of the distance
(``e3nn.math.soft_one_hot_linspace``) followed by the real spherical harmonics of the edge
direction up to degree ``sh_lmax`` (``e3nn.o3.spherical_harmonics``, component
normalisation). Encoders that compute their own distance encodings need neither, and the
cache stays small without them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch

from protsteps import BuildContext, Featurizer, ProteinGraph, option
from protsteps.config import check_ranges
from protsteps.errors import ConfigError, StructureError
from protsteps.graph import ALPHABET, UNKNOWN_RESIDUE, edge_geometry
from protsteps.structure import MAX_PEPTIDE_BOND, Chain, backbone_dihedrals

from .neighbours import knn_edges, merge_edges, radius_edges, sequential_edges

__all__ = ["ResidueGraphConfig", "ResidueGraph"]

RadialBasis = Literal["gaussian", "cosine", "smooth_finite", "fourier", "bessel"]

# ALPHABET index of each one-letter code, looked up for a whole sequence at once
_RESIDUE_INDEX = np.full(256, UNKNOWN_RESIDUE, dtype=np.int64)
_RESIDUE_INDEX[np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(len(ALPHABET))


@dataclasses.dataclass
class ResidueGraphConfig:
    """Settings of the ``residue_graph`` featurizer."""

    radius: float = option(
        7.0, "Join residues whose CA atoms are closer than this (Å); 0: no radius edges.", minimum=0
    )
    knn: int = option(
        0, "Also join each residue to its k nearest residues by CA distance; 0: off.", minimum=0
    )
    sequential: int = option(
        0, "Also join residues at most this many positions apart in chain order; 0: off.", minimum=0
    )
    min_residues: int = option(
        1, "Chains with fewer residues are not featurized (reported as failed).", minimum=0
    )
    max_residues: int = option(
        0, "Chains with more residues are not featurized (reported); 0: no limit.", minimum=0
    )
    rbf: int = option(0, "Radial basis functions of the CA-CA distance put in edge_attr; 0: none.", minimum=0)
    rbf_cutoff: float = option(0.0, "Distance (Å) where the radial basis ends; 0: the radius.", minimum=0)
    rbf_basis: RadialBasis = option("gaussian", "Radial basis of e3nn.math.soft_one_hot_linspace.")
    sh_lmax: int = option(
        -1,
        "Append spherical harmonics of the edge direction up to this degree to edge_attr; -1: none.",
        minimum=-1,
    )
    max_peptide_bond: float = option(
        MAX_PEPTIDE_BOND,
        "Longest C-N distance (Å) read as a peptide bond; angles across longer gaps are masked.",
        exclusive_minimum=0,
    )
    max_coordinate: float = option(
        10000.0,
        "Refuse chains with a backbone coordinate beyond this (Å) in absolute value; 0: no bound.",
        minimum=0,
    )
    min_ca_spread: float = option(
        1.0,
        "Refuse chains of 3 or more residues whose CA atoms all lie within this distance (Å) of "
        "their centroid (a collapsed structure); 0: off.",
        minimum=0,
    )
    min_ca_ca: float = option(
        1.0,
        "Refuse chains where more than max_close_fraction of consecutive CA-CA distances are below "
        "this (Å; a real one is 2.9-3.8 Å); 0: off.",
        minimum=0,
    )
    max_close_fraction: float = option(
        0.5,
        "Fraction of consecutive CA-CA distances that may be below min_ca_ca (see there).",
        minimum=0,
        maximum=1,
    )

    def __post_init__(self) -> None:
        # the declared bounds (shown by `protsteps plugins show`), then what they cannot say
        check_ranges(self, "[featurizer]")
        if self.max_residues and self.max_residues < self.min_residues:
            raise ValueError(
                f"max_residues ({self.max_residues}) is below min_residues ({self.min_residues})"
            )
        if self.rbf and self.rbf_cutoff == 0 and self.radius == 0:
            raise ValueError("rbf needs rbf_cutoff when there are no radius edges (radius = 0)")
        for name in ("max_coordinate", "min_ca_spread", "min_ca_ca"):
            if math.isinf(getattr(self, name)):
                raise ConfigError(
                    f"[featurizer] {name} = {getattr(self, name)} must be a finite number (0: off)"
                )

    @property
    def has_edges(self) -> bool:
        return self.radius > 0 or self.knn > 0 or self.sequential > 0

    @property
    def edge_attr_dim(self) -> int:
        """Width of ``edge_attr``: ``rbf + (sh_lmax + 1)^2``."""
        return self.rbf + (self.sh_lmax + 1) ** 2

    @property
    def edge_attr_irreps(self) -> str:
        """How ``edge_attr``'s columns transform: ``rbf`` invariant scalars, then the
        harmonics of degree l, which turn with the structure and take the sign (-1)^l in a
        mirror (e3nn's ``Irreps.spherical_harmonics``)."""
        parts = [f"{self.rbf}x0e"] if self.rbf else []
        parts += [f"1x{degree}{'e' if degree % 2 == 0 else 'o'}" for degree in range(self.sh_lmax + 1)]
        return " + ".join(parts)


def _residue(chain: Chain, index: int) -> str:
    return f"{chain.residue_names[index]} {chain.residue_numbers[index]}{chain.insertion_codes[index]}"


def _refuse_non_finite(chain: Chain, backbone: np.ndarray, observed: np.ndarray, where: str) -> None:
    """The per-atom check of :func:`check_geometry`: a NaN or infinite coordinate of an
    observed atom is refused, naming its residue."""
    finite = np.isfinite(backbone).all(-1) | ~observed
    if not finite.all():
        first = int(np.flatnonzero(~finite.all(-1))[0])
        raise StructureError(
            f"{where}: non-finite (NaN or infinite) coordinates, first at residue {_residue(chain, first)}"
        )


def _refuse_beyond(
    chain: Chain, backbone: np.ndarray, observed: np.ndarray, limit: float, where: str
) -> None:
    """The per-atom check of :func:`check_geometry`: an observed atom's coordinate beyond
    ``limit`` (``max_coordinate``) is refused, naming its residue."""
    size = np.where(observed, np.abs(backbone).max(-1), 0.0)
    beyond = size > limit
    if beyond.any():
        first = int(np.flatnonzero(beyond.any(-1))[0])
        raise StructureError(
            f"{where}: coordinate {size[first].max():.6g} Å at residue {_residue(chain, first)} is "
            f"beyond max_coordinate = {limit:g} Å (an absurd position; set "
            "max_coordinate higher, or 0, to accept it)"
        )


def _spread_at_least(ca: np.ndarray, spread: float) -> bool:
    """Whether the CA atoms' spread (the largest distance from their centroid) is surely
    at least ``spread``, from their extent alone: any point, the computed centroid
    included, lies at least half the widest extent along an axis from one of its two
    extremes. The margin (a millionth) is far above the rounding of the spread's own
    computation, so that a chain let through here is one it would let through too."""
    extent = float((ca.max(0) - ca.min(0)).max())
    return extent / 2 >= spread * (1 + 1e-6)


def check_geometry(chain: Chain, config: ResidueGraphConfig, where: str) -> None:
    """Refuse (:class:`StructureError`) a chain whose coordinates no real structure has:
    non-finite ones, any beyond ``max_coordinate``, every CA within ``min_ca_spread`` of the
    centroid, or more than ``max_close_fraction`` of consecutive CA-CA distances below
    ``min_ca_ca``. Training never sees a chain whose distances can overflow."""
    observed = chain.backbone_mask
    # Each check looks at every atom at once first, observed or not (unobserved ones are
    # zeros); only when that finds something are the observed atoms told apart. (The
    # largest magnitude is exact in the coordinates' own precision.)
    largest = float(np.abs(chain.backbone).max(initial=0.0))  # NaN if any coordinate is NaN
    if not math.isfinite(largest):
        _refuse_non_finite(chain, chain.backbone.astype(np.float64), observed, where)
    if config.max_coordinate and not largest <= config.max_coordinate:
        _refuse_beyond(chain, chain.backbone.astype(np.float64), observed, config.max_coordinate, where)
    ca = chain.backbone[:, 1].astype(np.float64)
    length = len(ca)
    if config.min_ca_spread and length >= 3 and not _spread_at_least(ca, config.min_ca_spread):
        spread = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(-1)).max())
        if spread < config.min_ca_spread:
            raise StructureError(
                f"{where}: all {length} CA atoms lie within {spread:.3g} Å of their centroid, below "
                f"min_ca_spread = {config.min_ca_spread:g} Å (a collapsed structure, every atom at one "
                "point; set min_ca_spread = 0 to accept it)"
            )
    if config.min_ca_ca and length >= 2:
        step = np.sqrt(((ca[1:] - ca[:-1]) ** 2).sum(-1))
        close = int((step < config.min_ca_ca).sum())
        if close > config.max_close_fraction * len(step):
            raise StructureError(
                f"{where}: {close} of {len(step)} consecutive CA-CA distances are below min_ca_ca = "
                f"{config.min_ca_ca:g} Å (real ones are 2.9-3.8 Å: a squashed structure; set "
                "min_ca_ca = 0 to accept it)"
            )


class ResidueGraph(Featurizer):
    """A parsed chain -> a residue graph (see the module docstring).

    ``provides`` lists what the configured graph holds: without any edge rule there are no
    edges; without ``rbf`` and ``sh_lmax`` there is no ``edge_attr``.
    """

    def __init__(self, config: ResidueGraphConfig, context: BuildContext | None = None) -> None:
        self.config = config
        provides = {"residue_type", "pos", "backbone", "dihedrals"}
        if config.has_edges:
            provides |= {"edge_index", "edge_distance", "edge_vector"}
            if config.edge_attr_dim:
                provides.add("edge_attr")
        self.provides = frozenset(provides)
        self.edge_attr_irreps = config.edge_attr_irreps if config.has_edges else ""

    def __repr__(self) -> str:
        return f"ResidueGraph({self.config})"

    def __call__(self, chain: Chain) -> ProteinGraph:
        config = self.config
        length = len(chain)
        where = f"{chain.source}: chain {chain.chain_id or '_'}"
        if length < config.min_residues:
            raise StructureError(
                f"{where} has {length} residues, fewer than min_residues = {config.min_residues}"
            )
        if config.max_residues and length > config.max_residues:
            raise StructureError(
                f"{where} has {length} residues, more than max_residues = {config.max_residues}"
            )
        check_geometry(chain, config, where)

        pos = torch.from_numpy(chain.backbone[:, 1].astype(np.float32))
        angles, defined = backbone_dihedrals(chain.backbone, chain.backbone_mask, config.max_peptide_bond)
        edge_index = torch.from_numpy(self._edges(chain.backbone[:, 1].astype(np.float64)))
        # (the store knows what edge_geometry made and leaves it out of the record unchecked)
        distance_t, vector_t = edge_geometry(pos, edge_index)
        return ProteinGraph(
            source=chain.source,
            chain_id=chain.chain_id,
            sequence=chain.sequence,
            residue_type=torch.from_numpy(_RESIDUE_INDEX[np.frombuffer(chain.sequence.encode(), np.uint8)]),
            residue_number=torch.from_numpy(chain.residue_numbers.astype(np.int64)),
            pos=pos,
            backbone=torch.from_numpy(chain.backbone.astype(np.float32)),
            backbone_mask=torch.from_numpy(chain.backbone_mask.copy()),
            dihedrals=torch.from_numpy(angles.astype(np.float32)),
            dihedral_mask=torch.from_numpy(defined),
            edge_index=edge_index,
            edge_distance=distance_t,
            edge_vector=vector_t,
            edge_attr=self._edge_attr(distance_t, vector_t),
            node_attr=torch.zeros(length, 0),
        )

    def _edges(self, pos: np.ndarray) -> np.ndarray:
        config = self.config
        sets = []
        if config.radius > 0:
            sets.append(radius_edges(pos, config.radius))
        if config.knn > 0:
            sets.append(knn_edges(pos, config.knn))
        if config.sequential > 0:
            sets.append(sequential_edges(len(pos), config.sequential))
        if not sets:
            return np.zeros((2, 0), dtype=np.int64)
        if len(sets) == 1 and config.radius > 0:
            # radius edges come out unique and ordered by (target, source) already
            return np.stack(sets[0])
        return merge_edges(len(pos), *sets)

    def _edge_attr(self, distance: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        config = self.config
        parts = []
        if config.rbf:
            from e3nn.math import soft_one_hot_linspace

            end = config.rbf_cutoff or config.radius
            parts.append(
                soft_one_hot_linspace(distance, 0.0, end, config.rbf, basis=config.rbf_basis, cutoff=True)
            )
        if config.sh_lmax >= 0:
            from e3nn import o3

            # A zero vector (two CA atoms at one place) has no direction: its harmonics are 0.
            sh = o3.spherical_harmonics(
                list(range(config.sh_lmax + 1)), vector, normalize=False, normalization="component"
            )
            parts.append(torch.where((vector.norm(dim=-1) > 0)[:, None], sh, torch.zeros_like(sh)))
        if not parts:
            return torch.zeros(len(distance), 0)
        return torch.cat(parts, dim=-1).to(torch.float32)
