"""The columnar reader gives the same chains as the Bio.PDB reader on every shared file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protsteps.errors import StructureError
from protsteps.structure import read_chains
from tests.conftest import STRUCTURES

FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*") if p.is_file())
    if STRUCTURES.is_dir()
    else []
)
CHUNK = 60
CHUNKS = [FILES[i : i + CHUNK] for i in range(0, len(FILES), CHUNK)]


def same_chains(path: Path) -> str | None:
    """``None`` when both readers agree (or Bio.PDB cannot read the file), else what differs."""
    try:
        reference = read_chains(path, reader="biopython")
    except StructureError:
        return None
    try:
        fast = read_chains(path, reader="columnar")
    except StructureError as exc:
        return f"columnar reader failed: {exc}"
    if [c.chain_id for c in fast] != [c.chain_id for c in reference]:
        return f"chains {[c.chain_id for c in fast]} != {[c.chain_id for c in reference]}"
    for ours, theirs in zip(fast, reference, strict=True):
        for name in ("sequence", "residue_names", "residue_numbers", "insertion_codes", "backbone_mask"):
            if not np.array_equal(np.asarray(getattr(ours, name)), np.asarray(getattr(theirs, name))):
                return f"chain {ours.chain_id}: {name} differs"
        if not np.array_equal(ours.backbone, theirs.backbone, equal_nan=True):
            return f"chain {ours.chain_id}: coordinates differ"
    return None


@pytest.mark.slow
@pytest.mark.parametrize(
    "chunk", range(len(CHUNKS)), ids=lambda i: f"files{i * CHUNK}-{i * CHUNK + CHUNK - 1}"
)
def test_columnar_reader_matches_biopython(structures_dir, chunk):
    differences = {name: why for name in CHUNKS[chunk] if (why := same_chains(structures_dir / name))}
    assert not differences


def test_all_shared_files_are_covered(structures_dir):
    assert len(FILES) > 900
    assert {Path(f).parts[0] for f in FILES} == {"masif", "db55_unbound", "mdanalysis", "biopython"}


def _outcome(path: Path, reader: str):
    try:
        return read_chains(path, reader=reader)
    except StructureError:
        return None


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_atom_lines_cut_short_mid_file_are_read_as_biopython_reads_them(tmp_path, structures_dir, crlf):
    """An atom line that ends before a field (its bytes then run into the next line, which
    the columnar reader reads fields from in place) gives Bio.PDB's outcome, at every
    column, for a backbone and a side-chain atom: both readers refuse, or read the same."""
    import gzip

    text = gzip.decompress((structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes())
    lines = text.split(b"\n")
    atoms = [i for i, line in enumerate(lines) if line.startswith(b"ATOM")]
    backbone = next(i for i in atoms[40:] if lines[i][12:16] == b" CA ")
    side = next(i for i in atoms[40:] if lines[i][12:16] == b" CB ")
    outcomes = set()
    for row in (backbone, side):
        for column in range(12, 61):
            cut = list(lines)
            cut[row] = cut[row][:column]
            path = tmp_path / f"cut_{row}_{column}.pdb"
            path.write_bytes((b"\r\n" if crlf else b"\n").join(cut))
            reference = _outcome(path, "biopython")
            fast = _outcome(path, "columnar")
            assert (fast is None) == (reference is None), (row, column)
            outcomes.add(fast is None)
            if reference is not None:
                assert same_chains(path) is None, (row, column)
    assert outcomes == {True, False}, "some cuts are refused and some read"


def test_anisou_lines_cut_short_mid_file_are_read_as_biopython_reads_them(tmp_path, structures_dir):
    """As above for the ANISOU records whose numbers Bio.PDB parses (read in place too)."""
    import gzip

    text = gzip.decompress((structures_dir / "mdanalysis" / "19hc.pdb.gz").read_bytes())
    lines = text.split(b"\n")[:1200]  # the first residues, with their ANISOU records
    lines.append(b"END")
    row = next(i for i, line in enumerate(lines) if line.startswith(b"ANISOU") and i > 200)
    outcomes = set()
    for column in (*range(27, 72), 75):
        cut = list(lines)
        cut[row] = cut[row][:column]
        path = tmp_path / f"anisou_{column}.pdb"
        path.write_bytes(b"\n".join(cut))
        reference = _outcome(path, "biopython")
        assert (_outcome(path, "columnar") is None) == (reference is None), column
        outcomes.add(reference is None)
        if reference is not None:
            assert same_chains(path) is None, column
    assert outcomes == {True, False}, "some cuts are refused and some read"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_fields_of_a_line_cut_before_them_are_not_read_from_the_next_line(tmp_path, structures_dir, eol):
    """Fields are read in place at each line start plus their column: for a line that ends
    before them, those bytes belong to the next line. A next line crafted so that they read
    as numbers must not make a refused file readable: both readers refuse it."""
    import gzip

    text = gzip.decompress((structures_dir / "mdanalysis" / "19hc.pdb.gz").read_bytes())
    lines = text.split(b"\n")[:1200]
    lines.append(b"END")
    atom = next(i for i, line in enumerate(lines) if line.startswith(b"ATOM") and i > 200)
    anisou = next(i for i, line in enumerate(lines) if line.startswith(b"ANISOU") and i > 200)
    numbers = {atom: b"   1.000   2.000   3.000", anisou: b"    100    200    300    400    500    600"}
    first_field = {atom: 30, anisou: 28}
    for row in (atom, anisou):
        for column in range(12, first_field[row] - len(eol)):
            # the next line's bytes where the cut line's fields would be
            offset = first_field[row] - column - len(eol)
            crafted = b"REMARK"[:offset].ljust(offset) + numbers[row]
            cut = [*lines[:row], lines[row][:column], crafted, *lines[row + 1 :]]
            path = tmp_path / f"crafted_{row}_{column}.pdb"
            path.write_bytes(eol.join(cut))
            assert _outcome(path, "biopython") is None, (row, column)
            assert _outcome(path, "columnar") is None, (row, column)
