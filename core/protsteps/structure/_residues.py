"""Residue names: which ones are amino acids, and the one-letter code of their parent.

Structures name residues with three-letter codes from the PDB's chemical component
dictionary (``MSE`` for selenomethionine, ``SEP`` for phosphoserine) and, in files written
by simulation packages, with force-field names (``HIE``, ``CYX``). A language-model teacher
needs one letter per residue, so every modified amino acid is mapped to its parent.
"""

from __future__ import annotations

from Bio.Data.PDBData import nucleic_letters_3to1_extended, protein_letters_3to1_extended

__all__ = ["STANDARD", "parent_letter", "is_water", "is_nucleotide", "is_known_amino_acid"]

#: the 20 standard amino acids
STANDARD: dict[str, str] = {
    "ALA": "A",
    "ARG": "R",
    "ASN": "N",
    "ASP": "D",
    "CYS": "C",
    "GLN": "Q",
    "GLU": "E",
    "GLY": "G",
    "HIS": "H",
    "ILE": "I",
    "LEU": "L",
    "LYS": "K",
    "MET": "M",
    "PHE": "F",
    "PRO": "P",
    "SER": "S",
    "THR": "T",
    "TRP": "W",
    "TYR": "Y",
    "VAL": "V",
}

# Protonation and disulfide states named by AMBER, CHARMM and GROMACS force fields; they
# are the standard residue in a simulation's naming scheme, not modifications.
_FORCE_FIELD = {
    "HID": "H",
    "HIE": "H",
    "HIP": "H",
    "HSD": "H",
    "HSE": "H",
    "HSP": "H",
    "HISD": "H",
    "HISE": "H",
    "HISH": "H",
    "HISA": "H",
    "HISB": "H",
    "CYX": "C",
    "CYM": "C",
    "CYS2": "C",
    "ASH": "D",
    "ASPH": "D",
    "ASPP": "D",
    "GLH": "E",
    "GLUH": "E",
    "GLUP": "E",
    "LYN": "K",
    "LSN": "K",
    "ARN": "R",
}

# Residues whose parent is one of the 20 but which the extended table leaves out, and
# ambiguity codes whose parent is not one residue (they become X).
_EXTRA = {"SEC": "C", "PYL": "K", "UNK": "X", "ASX": "X", "GLX": "X", "XLE": "X", "XAA": "X"}

_LETTERS: dict[str, str] = {
    **{name.strip(): letter for name, letter in protein_letters_3to1_extended.items()},
    **_FORCE_FIELD,
    **_EXTRA,
    **STANDARD,
}

_WATERS = frozenset(
    {"HOH", "WAT", "DOD", "H2O", "D2O", "TIP", "TIP3", "TIP4", "TP3", "T3P", "T4P", "SOL", "SPC"}
)
_NUCLEOTIDES = frozenset(
    {name.strip() for name in nucleic_letters_3to1_extended}
    | {"A", "C", "G", "U", "T", "I", "N", "DA", "DC", "DG", "DT", "DU", "DI", "DN"}
) - frozenset(_LETTERS)


def parent_letter(name: str) -> str | None:
    """The one-letter code of a residue name's parent amino acid: ``MSE -> M``, ``UNK -> X``;
    ``None`` for a name that is not a known amino acid."""
    return _LETTERS.get(name)


def is_known_amino_acid(name: str) -> bool:
    return name in _LETTERS


def is_water(name: str) -> bool:
    return name in _WATERS


def is_nucleotide(name: str) -> bool:
    return name in _NUCLEOTIDES
