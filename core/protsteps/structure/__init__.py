"""Structure files in, protein chains out.

>>> from protsteps.structure import read_chains
>>> chains = read_chains("1abc.cif.gz")             # doctest: +SKIP
>>> chains[0].sequence, chains[0].backbone.shape    # doctest: +SKIP
('MKV...', (153, 4, 3))

Reading rules (both readers): the first model; per atom the highest-occupancy alternate
location; residues in file order (insertion codes included); modified amino acids mapped to
their parent (``MSE -> M``), unknown ones to ``X``; waters, ligands, ions and nucleic acids
left out; residues without a CA atom skipped, residues missing N or C kept (their angles
are masked). A file cut short or malformed is refused whole, never read in part; a file or
gzip content over ``max_bytes`` (1 GiB) is refused. See ``docs/structures.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from ._chain import BACKBONE_ATOMS, Chain, ResidueRecords, assemble_chains
    from ._geometry import MAX_PEPTIDE_BOND, backbone_dihedrals, dihedral, peptide_bonds
    from ._io import DEFAULT_MAX_BYTES, SUFFIXES, is_structure_path, split_selection
    from ._read import READERS, Reader, read_chains, read_chains_from_bytes
    from ._residues import STANDARD, parent_letter

#: public name -> the module that defines it, imported on first use: the command line
#: imports ``._io`` alone (its help names the readers), and the readers import numpy
_WHERE = {
    "BACKBONE_ATOMS": "._chain",
    "Chain": "._chain",
    "ResidueRecords": "._chain",
    "assemble_chains": "._chain",
    "MAX_PEPTIDE_BOND": "._geometry",
    "backbone_dihedrals": "._geometry",
    "dihedral": "._geometry",
    "peptide_bonds": "._geometry",
    "DEFAULT_MAX_BYTES": "._io",
    "SUFFIXES": "._io",
    "is_structure_path": "._io",
    "split_selection": "._io",
    "READERS": "._io",
    "Reader": "._io",
    "read_chains": "._read",
    "read_chains_from_bytes": "._read",
    "STANDARD": "._residues",
    "parent_letter": "._residues",
}

__all__ = [
    "BACKBONE_ATOMS",
    "DEFAULT_MAX_BYTES",
    "MAX_PEPTIDE_BOND",
    "READERS",
    "STANDARD",
    "SUFFIXES",
    "Chain",
    "Reader",
    "ResidueRecords",
    "assemble_chains",
    "backbone_dihedrals",
    "dihedral",
    "is_structure_path",
    "parent_letter",
    "peptide_bonds",
    "read_chains",
    "read_chains_from_bytes",
    "split_selection",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
