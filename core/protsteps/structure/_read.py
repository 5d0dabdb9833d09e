"""Reading a structure file into protein chains."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import StructureError
from ._bcif import atom_site_arrays, is_bcif, read_records_bcif, to_mmcif
from ._biopython import read_records_biopython
from ._chain import Chain, ResidueRecords, assemble_chains
from ._cif import atom_site_columns
from ._columnar import read_records_columnar
from ._complete import check_cif_complete, check_pdb_complete
from ._io import (
    DEFAULT_MAX_BYTES,
    READERS,
    Reader,
    check_text,
    decompress,
    named_format,
    read_bytes,
    split_selection,
    structure_format,
)
from ._residues import is_known_amino_acid, is_nucleotide, is_water

__all__ = ["Reader", "READERS", "read_chains", "read_chains_from_bytes"]


def read_chains(
    path: str | os.PathLike[str],
    chains: Sequence[str] | None = None,
    reader: Reader = "columnar",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Chain]:
    """The protein chains of a structure file.

    Parameters
    ----------
    path:
        A ``.pdb``, ``.ent``, ``.cif``, ``.mmcif`` or ``.bcif`` (BinaryCIF) file,
        optionally gzipped; ``path:A``
        (or ``path:A,B``) selects chains.
    chains:
        Chain identifiers to keep (``None``: all). Combined with a selection in ``path``.
    reader:
        See :data:`Reader`.
    max_bytes:
        The largest file, and the largest content once gunzipped, that is read (default
        1 GiB); a gzip stream is inflated piece by piece and refused as soon as it passes.

    Returns
    -------
    One :class:`Chain` per protein chain of the first model, in file order.

    Raises
    ------
    StructureError
        The file is missing, empty, binary, larger than ``max_bytes``, truncated or
        malformed (see ``docs/structures.md``, reading rules), not a structure, holds no
        protein chain, or lacks a requested chain. The message names the file and the
        reason.
    """
    file, selected = split_selection(path)
    if chains is not None:
        selected = tuple(chains) if selected is None else tuple(c for c in selected if c in chains)
    return read_chains_from_bytes(file, read_bytes(file, max_bytes), selected, reader, max_bytes)


def read_chains_from_bytes(
    path: Path,
    data: bytes,
    chains: Sequence[str] | None = None,
    reader: Reader = "columnar",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Chain]:
    """:func:`read_chains` on a file's bytes already in memory (``path`` names it in
    messages and in ``Chain.source``)."""
    text = decompress(path, data, max_bytes)
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; readers: {', '.join(READERS)}")
    named = named_format(path)
    if named == "bcif" or (named is None and is_bcif(text)):
        records = _binary_records(path, text, reader)
    else:
        records = _text_records(path, text, reader)
    found = assemble_chains(str(path), records)
    if not found:
        raise StructureError(f"{path}: {_why_no_protein(records)}")
    if chains is not None:
        wanted = set(chains)
        present = {c.chain_id or "_" for c in found}
        missing = sorted(wanted - present - ({""} if "_" in present else set()))
        if missing:
            raise StructureError(
                f"{path}: no protein chain {', '.join(missing)} (protein chains: {', '.join(sorted(present))})"
            )
        found = [c for c in found if (c.chain_id or "_") in wanted or c.chain_id in wanted]
    return found


def _binary_records(path: Path, data: bytes, reader: Reader) -> ResidueRecords:
    """A BinaryCIF file's residues: its decoded ``_atom_site`` columns read as an mmCIF
    loop is, or (the reference) written out as one and read by Bio.PDB."""
    if reader == "columnar":
        try:
            return read_records_bcif(path, data)
        except StructureError:
            raise
        except Exception:
            pass  # the reference reader below, as for text files
    return read_records_biopython(path, to_mmcif(path, atom_site_arrays(path, data)), "cif")


def _text_records(path: Path, text: bytes, reader: Reader) -> ResidueRecords:
    check_text(path, text)
    fmt = structure_format(path, text)
    # Whole files or nothing, whichever reader reads them (the columnar reader checks a PDB
    # file on the line index it makes anyway).
    if fmt == "cif":
        check_cif_complete(path, text)
    elif reader == "biopython":
        check_pdb_complete(path, text)
    if reader == "biopython":
        if fmt == "cif":
            atom_site_columns(path, text)  # the loop checks the columnar reader makes as it reads
        records = read_records_biopython(path, text, fmt)
    else:
        try:
            records = read_records_columnar(path, text, fmt)
        except StructureError:
            raise
        except Exception:
            # The reference reader is slower but copes with anything Bio.PDB copes with.
            if fmt == "pdb":
                check_pdb_complete(path, text)
            records = read_records_biopython(path, text, fmt)
    return records


def _why_no_protein(records: ResidueRecords) -> str:
    # Only residues with an atom named like a backbone atom (the columnar reader sees no
    # other), so that both readers give the same reason.
    mask = np.asarray(records.backbone_mask, dtype=bool).reshape(-1, 4)
    names = [name for i, name in enumerate(records.residue_names) if mask[i].any()]
    if not names:
        return "not a protein: no amino-acid backbone atoms (N, CA, C, O) in the first model"
    kinds: Counter[str] = Counter()
    for name in names:
        if is_water(name):
            kinds["water"] += 1
        elif is_nucleotide(name):
            kinds["nucleotide"] += 1
        elif is_known_amino_acid(name):
            kinds["amino acid without CA"] += 1
        else:
            kinds["other (ligand, ion, unknown)"] += 1
    found = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    return (
        "not a protein: no amino-acid residue with a CA atom (residues with an atom named N, CA, C "
        f"or O: {found})"
    )
