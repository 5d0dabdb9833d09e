"""The parsed-chain type and the rules that turn residue records into chains.

Both readers (Bio.PDB and the columnar one) produce the same intermediate: one record per
residue of the first model, in file order, with its backbone atoms already resolved to one
alternate location. :func:`assemble_chains` applies the residue rules to those records, so
the two readers cannot disagree about which residues a protein has.
"""

from __future__ import annotations

import dataclasses
import functools
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

    chain_ids, residue_names, insertion_codes: [R] str (a list or a numpy str array);
    hetero: [R] bool (HETATM); residue_numbers: [R] int64; backbone: [R, 4, 3] float32;
    backbone_mask: [R, 4] bool.
    """

    chain_ids: Sequence[str] | np.ndarray
    residue_names: Sequence[str] | np.ndarray
    hetero: np.ndarray
    residue_numbers: np.ndarray
    insertion_codes: Sequence[str] | np.ndarray
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
    names = np.asarray(records.residue_names, dtype=str)
    mask = np.asarray(records.backbone_mask, dtype=bool).reshape(-1, 4)
    if len(names) == 0:
        return []
    # The residue rules are decided once per distinct name, not once per residue.
    unique_names, name_code = np.unique(names, return_inverse=True)
    name_code = name_code.reshape(-1)
    rules = [_residue_rule(n) for n in unique_names.tolist()]
    known = np.array([r[0] for r in rules], dtype=bool)[name_code]
    other = np.array([r[1] for r in rules], dtype=bool)[name_code]
    letters = np.frombuffer("".join(r[2] for r in rules).encode("ascii"), dtype="S1")
    keep = mask[:, 1] & (known | (other & mask[:, 0] & mask[:, 2]))
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return []
    chain_ids = np.asarray(records.chain_ids, dtype=str)[kept]
    order, rows_all, bounds = _group_by_chain(chain_ids, kept)
    numbers = np.asarray(records.residue_numbers, dtype=np.int64)
    icodes = np.char.strip(np.asarray(records.insertion_codes, dtype=str))
    backbone = np.where(mask[..., None], records.backbone, 0).astype(np.float32)
    chains = []
    for index in range(len(bounds) - 1):
        rows = rows_all[bounds[index] : bounds[index + 1]]
        chains.append(
            Chain(
                source=source,
                chain_id=str(chain_ids[order[bounds[index]]]).strip(),
                sequence=letters[name_code[rows]].tobytes().decode("ascii"),
                residue_names=names[rows],
                residue_numbers=numbers[rows],
                insertion_codes=icodes[rows],
                backbone=backbone[rows],
                backbone_mask=mask[rows],
            )
        )
    return chains


@functools.lru_cache(maxsize=4096)
def _residue_rule(name: str) -> tuple[bool, bool, str]:
    """For a residue name: whether it is a known amino acid, whether it is neither a water
    nor a nucleotide, and its one-letter code (``X`` if none); kept per name, as a file's
    few dozen names recur in every file."""
    return is_known_amino_acid(name), not (is_water(name) or is_nucleotide(name)), parent_letter(name) or "X"


def _group_by_chain(chain_ids: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept residues grouped by chain: chains in order of first appearance, residues within a
    chain in file order. Returns ``order`` (positions in ``chain_ids``), ``rows``
    (``kept[order]``) and ``bounds`` ([chains + 1]: chain ``c`` is ``rows[bounds[c]:bounds[c+1]]``).
    When each chain comes as one run of residues (the usual file) they are already in that
    order and are taken in place; otherwise :func:`_group_general` sorts them."""
    new_run = np.ones(len(chain_ids), dtype=bool)
    np.not_equal(chain_ids[1:], chain_ids[:-1], out=new_run[1:])
    run_starts = np.flatnonzero(new_run)
    run_ids = chain_ids[run_starts].tolist()
    if len(set(run_ids)) != len(run_ids):
        return _group_general(chain_ids, kept)
    return np.arange(len(kept)), kept, np.append(run_starts, len(kept))


def _group_general(chain_ids: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_group_by_chain` for any order of residues (chains interleaved in the file)."""
    _, first, inverse = np.unique(chain_ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    chain_rank = rank[inverse.reshape(-1)]
    order = np.argsort(chain_rank, kind="stable")
    bounds = np.searchsorted(chain_rank[order], np.arange(len(first) + 1))
    return order, kept[order], bounds
