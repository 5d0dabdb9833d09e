"""The parsed-chain type and the rules that turn residue records into chains.

Both readers (Bio.PDB and the columnar one) produce the same intermediate: one record per
residue of the first model, in file order, with its backbone atoms already resolved to one
alternate location. :func:`assemble_chains` applies the residue rules to those records, so
the two readers cannot disagree about which residues a protein has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ._geometry import MAX_PEPTIDE_BOND, backbone_dihedrals
from ._residues import is_known_amino_acid, is_nucleotide, is_water, parent_letter

__all__ = ["BACKBONE_ATOMS", "Chain", "ResidueRecords", "assemble_chains"]

#: the backbone atoms a chain keeps, in the order of ``Chain.backbone``'s second axis
BACKBONE_ATOMS: tuple[str, ...] = ("N", "CA", "C", "O")


@dataclasses.dataclass(frozen=True, eq=False)
class Chain:
    """One protein chain as read from a structure file: observed residues with a CA atom,
    in chain order.

    Attributes
    ----------
    source: the file it was read from.
    chain_id: the author chain identifier ("" when the file leaves it blank).
    sequence: one-letter code per residue; modified residues as their parent, unknown as X.
    residue_names: [L] str, residue names as written in the file (``MSE``).
    residue_numbers: [L] int64, author residue numbers.
    insertion_codes: [L] str, insertion codes ("" when none).
    backbone: [L, 4, 3] float32, N, CA, C, O coordinates (Å; 0 where not observed).
    backbone_mask: [L, 4] bool, which backbone atoms were observed (CA always is).
    """

    source: str
    chain_id: str
    sequence: str
    residue_names: np.ndarray
    residue_numbers: np.ndarray
    insertion_codes: np.ndarray
    backbone: np.ndarray
    backbone_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def ca(self) -> np.ndarray:
        """[L, 3] float32, CA coordinates."""
        return self.backbone[:, 1]

    @property
    def name(self) -> str:
        """``source:chain_id``, the way chains are named in selections and reports."""
        return f"{self.source}:{self.chain_id or '_'}"

    def dihedrals(self, max_bond: float = MAX_PEPTIDE_BOND) -> tuple[np.ndarray, np.ndarray]:
        """(phi, psi, omega) [L, 3] float64 radians and their mask [L, 3] bool; see
        :func:`protsteps.structure.backbone_dihedrals`."""
        return backbone_dihedrals(self.backbone, self.backbone_mask, max_bond)


@dataclasses.dataclass
class ResidueRecords:
    """Every residue of a model, in file order, before any residue rule applies.

    chain_ids, residue_names, insertion_codes: [R] str; hetero: [R] bool (HETATM);
    residue_numbers: [R] int64; backbone: [R, 4, 3] float32; backbone_mask: [R, 4] bool.
    """

    chain_ids: Sequence[str]
    residue_names: Sequence[str]
    hetero: np.ndarray
    residue_numbers: np.ndarray
    insertion_codes: Sequence[str]
    backbone: np.ndarray
    backbone_mask: np.ndarray


def assemble_chains(source: str, records: ResidueRecords) -> list[Chain]:
    """Group residue records into protein chains.

    A residue is kept when its name is a known amino acid (standard, modified, or a
    force-field variant) and it has a CA atom, or, whatever its name, when it has N, CA and
    C atoms and is neither a water nor a nucleotide (an uncatalogued modified amino acid,
    read as X). Everything else (waters, ions, ligands, nucleic acids, residues without CA)
    is left out. Chains come in order of first appearance; chains left without residues are
    dropped.
    """
    names = np.asarray(records.residue_names, dtype=object)
    mask = np.asarray(records.backbone_mask, dtype=bool)
    unique_names = set(names.tolist())
    known = {n: is_known_amino_acid(n) for n in unique_names}
    other = {n: not (is_water(n) or is_nucleotide(n)) for n in unique_names}
    is_known = np.array([known[n] for n in names.tolist()], dtype=bool)
    is_other = np.array([other[n] for n in names.tolist()], dtype=bool)
    has_ca = mask[:, 1] if len(mask) else np.zeros(0, dtype=bool)
    has_nc = mask[:, 0] & mask[:, 2] if len(mask) else np.zeros(0, dtype=bool)
    keep = has_ca & (is_known | (is_other & has_nc))

    chain_ids = np.asarray(records.chain_ids, dtype=object)
    order: dict[str, list[int]] = {}
    for index in np.flatnonzero(keep).tolist():
        order.setdefault(chain_ids[index], []).append(index)
    chains = []
    for chain_id, indices in order.items():
        rows = np.asarray(indices, dtype=np.int64)
        residue_names = names[rows]
        sequence = "".join(parent_letter(n) or "X" for n in residue_names.tolist())
        chains.append(
            Chain(
                source=source,
                chain_id=str(chain_id).strip(),
                sequence=sequence,
                residue_names=residue_names.astype(str),
                residue_numbers=np.asarray(records.residue_numbers, dtype=np.int64)[rows],
                insertion_codes=np.asarray(
                    [str(c).strip() for c in np.asarray(records.insertion_codes, dtype=object)[rows]],
                    dtype=str,
                )
                if len(rows)
                else np.zeros(0, dtype=str),
                backbone=np.where(mask[rows][..., None], records.backbone[rows], 0).astype(np.float32),
                backbone_mask=mask[rows].copy(),
            )
        )
    return chains
