"""The columnar reader reads every shared structure by itself: it never hands a file over to
the Bio.PDB reader (its safety net for what it cannot read), which would hide a bug behind a
100x slower read."""

from __future__ import annotations

import pytest

from protsteps.errors import StructureError
from protsteps.structure._columnar import read_records_columnar
from protsteps.structure._io import check_text, decompress, structure_format
from tests.conftest import STRUCTURES

FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*") if p.is_file())
    if STRUCTURES.is_dir()
    else []
)


@pytest.mark.slow
def test_no_shared_file_falls_back_to_biopython(structures_dir):
    assert len(FILES) > 900
    crashed = {}
    for name in FILES:
        path = structures_dir / name
        text = decompress(path, path.read_bytes())
        try:
            check_text(path, text)
            read_records_columnar(path, text, structure_format(path, text))
        except StructureError:
            pass  # refused: the same refusal whichever reader reads it (tested elsewhere)
        except Exception as exc:
            crashed[name] = f"{type(exc).__name__}: {exc}"
    assert not crashed
