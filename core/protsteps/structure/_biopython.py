"""The reference reader: Bio.PDB's object tree.

Slower than the columnar reader (it builds an object per atom) but the behaviour every
other reader is checked against; it is also the fallback for files the columnar reader
cannot tokenize.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ..errors import StructureError
from ._chain import BACKBONE_ATOMS, ResidueRecords
from ._io import Format

__all__ = ["read_records_biopython"]


def read_records_biopython(path: Path, text: bytes, fmt: Format) -> ResidueRecords:
    """Residue records of the first model, read with Bio.PDB (PERMISSIVE mode).

    Alternate locations are resolved as Bio.PDB does: the highest-occupancy one per atom.
    """
    from Bio.PDB import MMCIFParser, PDBParser

    # latin-1 maps bytes to characters one to one, so fixed columns stay where they are.
    handle = io.StringIO(text.decode("latin-1"))
    parser = PDBParser(QUIET=True) if fmt == "pdb" else MMCIFParser(QUIET=True, PERMISSIVE=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = parser.get_structure(path.name, handle)
    except Exception as exc:
        raise StructureError(f"{path}: Bio.PDB cannot parse it: {type(exc).__name__}: {exc}") from None
    models = list(structure)
    if not models:
        raise StructureError(f"{path}: no ATOM or HETATM records")
    chain_ids: list[str] = []
    names: list[str] = []
    hetero: list[bool] = []
    numbers: list[int] = []
    icodes: list[str] = []
    coords: list[np.ndarray] = []
    masks: list[list[bool]] = []
    for chain in models[0]:
        for residue in chain:
            if residue.is_disordered() == 2:
                residue = _most_occupied(residue.disordered_get_list())
            field, number, icode = residue.id
            chain_ids.append(chain.id)
            names.append(residue.get_resname().strip())
            hetero.append(field != " ")
            numbers.append(number)
            icodes.append(icode)
            xyz = np.zeros((4, 3), dtype=np.float32)
            present = [False] * 4
            for slot, atom_name in enumerate(BACKBONE_ATOMS):
                if atom_name in residue:
                    xyz[slot] = residue[atom_name].coord
                    present[slot] = True
            coords.append(xyz)
            masks.append(present)
    count = len(names)
    return ResidueRecords(
        chain_ids=chain_ids,
        residue_names=names,
        hetero=np.asarray(hetero, dtype=bool),
        residue_numbers=np.asarray(numbers, dtype=np.int64),
        insertion_codes=icodes,
        backbone=np.stack(coords) if count else np.zeros((0, 4, 3), np.float32),
        backbone_mask=np.asarray(masks, dtype=bool).reshape(count, 4),
    )


def _most_occupied(variants: list) -> object:
    """The variant of a point mutation (one position, several residue names) whose CA has
    the highest occupancy, the first on a tie. Bio.PDB itself selects the last one read."""

    def occupancy(residue: object) -> float:
        if "CA" not in residue:  # type: ignore[operator]
            return float("-inf")
        value = residue["CA"].get_occupancy()  # type: ignore[index]
        return float("-inf") if value is None else float(value)

    best = variants[0]
    for variant in variants[1:]:
        if occupancy(variant) > occupancy(best):
            best = variant
    return best
