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
