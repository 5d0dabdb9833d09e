"""The whole-file checks of a PDB file decide alike whether they find records by searching
the text (the Bio.PDB reader's way) or on the columnar reader's line heads."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from protsteps.errors import StructureError
from protsteps.structure._complete import check_pdb_complete

REGRESSION = Path(__file__).resolve().parents[1] / "data" / "regression"


def heads_of(text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Line starts and first 8 bytes of every line, as the columnar reader computes them."""
    buffer = np.frombuffer(text, dtype=np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(buffer == 10) + 1))
    if len(buffer) and starts[-1] == len(buffer):
        starts = starts[:-1]
    padded = np.concatenate((buffer, np.zeros(8, dtype=np.uint8)))
    return starts, sliding_window_view(padded, 8)[starts].view("<u8").ravel()


def outcome(text: bytes, by_heads: bool) -> str | None:
    try:
        check_pdb_complete(Path("x.pdb"), text, heads_of(text) if by_heads else None)
    except StructureError as exc:
        return str(exc)
    return None


def variants(text: bytes) -> list[bytes]:
    """The text cut after every line, and with its last lines of each kind removed."""
    lines = text.splitlines(keepends=True)
    cuts = [b"".join(lines[:k]) for k in range(1, len(lines) + 1)]
    without = [b"".join(line for line in lines if not line.startswith(record)) for record in (b"TER", b"END")]
    return [text, *cuts, *without, text.replace(b"\n", b"\r\n")]


@pytest.mark.parametrize("name", sorted(p.name for p in REGRESSION.glob("*.pdb")))
def test_regression_files_and_their_cuts(name):
    text = (REGRESSION / name).read_bytes()
    for variant in variants(text):
        assert outcome(variant, True) == outcome(variant, False)


def test_a_model_file_cut_at_every_line(structures_dir):
    text = gzip.decompress((structures_dir / "mdanalysis" / "nmr_neopetrosiamide.pdb.gz").read_bytes())
    lines = text.splitlines(keepends=True)
    refused = 0
    for k in range(1, len(lines), 7):
        cut = b"".join(lines[:k])
        by_heads = outcome(cut, True)
        assert by_heads == outcome(cut, False)
        refused += by_heads is not None
    assert refused > 0  # cut inside an open MODEL
