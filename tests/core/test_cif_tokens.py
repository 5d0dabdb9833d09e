"""The mmCIF loop read as token offsets (the columnar reader's fast path) gives the values
the exact tokenizer gives, on every shared mmCIF file and on variants that exercise what the
fast path must read alike (quotes, comment lines, CRLF, tabs) or leave to the exact rules."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from protsteps.structure._cif import atom_site_columns, atom_site_tokens
from tests.conftest import STRUCTURES

CIF_FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*.cif*")) if STRUCTURES.is_dir() else []
)


def text_of(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def assert_same_values(path: Path, text: bytes) -> bool:
    """Both readings agree wherever the fast one reads; returns whether it read."""
    tokens = atom_site_tokens(text)
    if tokens is None:
        return False
    columns = atom_site_columns(path, text)
    assert columns is not None
    assert tokens.tags == list(columns)
    for tag, values in columns.items():
        assert tokens.strings(tag).tolist() == np.asarray(values, dtype=bytes).tolist(), tag
    return True


def test_every_shared_mmcif_file_is_covered():
    assert len(CIF_FILES) >= 15


@pytest.mark.parametrize("name", CIF_FILES)
def test_token_offsets_give_the_exact_values(structures_dir, name):
    path = structures_dir / name
    assert assert_same_values(path, text_of(path))


def _loop(rows: list[bytes]) -> bytes:
    header = b"data_test\nloop_\n_atom_site.group_PDB\n_atom_site.id\n_atom_site.label_atom_id\n"
    return header + b"".join(rows) + b"#\n"


@pytest.mark.parametrize(
    "rows, fast",
    [
        ([b"ATOM 1 N\n", b"ATOM 2 CA\n"], True),
        ([b'ATOM 1 "O5\'"\n', b"HETATM 2 'C1'\n"], True),  # quotes removed
        ([b"ATOM 1 N\r\n", b"ATOM\t2\tCA\r\n"], True),  # CRLF and tabs are white space
        ([b"ATOM 1 N\n", b"# a comment line\n", b"ATOM 2 CA\n"], True),
        ([b"ATOM 1 'O5 prime'\n"], False),  # a quoted value with a blank: exact rules
        ([b"ATOM 1 N # comment\n"], False),
        ([b"ATOM 1 N\n", b";text\n", b";\n"], False),
        ([b"ATOM 1 N\rATOM 2 CA\n"], False),
        ([b"ATOM 1 'N\n"], False),  # an unclosed quote
        ([b"ATOM 1 N\n", b"ATOM 2\n"], False),  # values that do not fill the last row
        ([b"ATOM 1 N\n", b"ATOM 2 LOOP_\n"], False),  # loop_ in any case ends the loop
        ([b"ATOM 1 Data_x\n"], False),
        ([b"ATOM _x N\n"], False),  # a data name in mid-line
        ([b"ATOM 1 N\x01\n"], False),  # a control byte is no white space to the exact rules
        ([b"ATOM 1 N\xe9\n"], False),
        ([b"ATOM 1 Lo\n", b"ATOM 2 data\n"], True),  # only whole words end the loop
    ],
)
def test_fast_path_reads_alike_or_declines(rows, fast):
    text = _loop(rows)
    assert assert_same_values(Path("t.cif"), text) is fast


def test_decimal_values_equal_float_or_are_declined():
    import re

    rng = np.random.default_rng(3)
    values = [
        f"{v:.{d}f}" for v, d in zip(rng.uniform(-9999, 9999, 3000), rng.integers(0, 9, 3000), strict=True)
    ]
    values += [
        "0",
        "-0.0",
        "7.",
        ".5",
        "-.5",
        "+1.5",
        "1e3",
        "12345678.1234567",
        "123456789.1",
        "1.123456789",
    ]
    values += ["1-2.3", "1.2.3", "nan", "-", "1.2-", "00012.50"]
    layout = re.compile(r"-?[0-9]{1,8}(\.[0-9]{1,8})?")
    for value in values:
        text = _loop([b"ATOM 1 " + value.encode() + b"\n", b"ATOM 2 1.5\n"])
        got = atom_site_tokens(text).decimals("label_atom_id")
        exact = layout.fullmatch(value) and len(value.lstrip("-").replace(".", "")) <= 15
        if exact:
            assert (
                got is not None and got[0] == float(value) and np.signbit(got[0]) == np.signbit(float(value))
            )
        else:
            assert got is None, value
    many = [f"{v:.5f}".encode() for v in rng.uniform(-999, 999, 2000)]
    text = _loop([b"ATOM 1 " + v + b"\n" for v in many])
    assert atom_site_tokens(text).decimals("label_atom_id").tolist() == [float(v) for v in many]
