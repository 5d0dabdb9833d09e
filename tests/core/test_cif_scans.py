"""The mmCIF reader's one-byte scans (where the ``_atom_site`` loop ends, whether a line
starts with ``;``, the comment lines cut off, the count of text-field lines) give what the
plain searches they replace give: on every shared mmCIF file and on random texts made of
the markers, with more hits than the scans look at one by one."""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path

import numpy as np
import pytest

from protsteps.errors import StructureError
from protsteps.structure import _cif
from protsteps.structure._cif import (
    _SCAN_HITS,
    _comment_free,
    _has_line_start,
    _loop_end,
    _loop_end_searched,
    _loop_header,
)
from protsteps.structure._complete import check_cif_complete
from tests.conftest import STRUCTURES

CIF_FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*.cif*")) if STRUCTURES.is_dir() else []
)
_COMMENT_LINES = re.compile(rb"\n#[^\n]*")


def text_of(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def without_comment_lines(block: bytes) -> bytes:
    """The former block copy: the closing ``#`` line cut off, else every comment line removed."""
    last = block.rfind(b"\n#")
    if last >= 0 and block.find(b"#") == last + 1 and block.find(b"\n", last + 1) in (-1, len(block) - 1):
        return block[: last + 1]
    if b"#" in block:
        return b"".join(_COMMENT_LINES.split(b"\n" + block))
    return block


def text_fields(text: bytes) -> int:
    return text.count(b"\n;") + text.startswith(b";")


@pytest.mark.parametrize("name", CIF_FILES)
def test_scans_agree_with_searches_on_shared_files(structures_dir, name):
    text = text_of(structures_dir / name)
    header = _loop_header(text)
    starts = [header[1]] if header else []
    # and from a spread of other line starts
    breaks = [m.end() for m in re.finditer(rb"\n", text)]
    starts += breaks[:: max(1, len(breaks) // 40)]
    for start in starts:
        end = _loop_end(text, start)
        assert end == _loop_end_searched(text, start), start
        source, low, high = _comment_free(text, start, end)
        block = without_comment_lines(text[start:end])
        assert source[low:high] == block
        assert _has_line_start(source, b";", low, high) == (b"\n;" in block)
    # the count of text-field lines decides whether the file is refused
    odd = text_fields(text) % 2 == 1
    try:
        check_cif_complete(Path(name), text)
        refused = False
    except StructureError as exc:
        refused = "text field" in str(exc)
    assert refused == odd


PIECES = [
    b"\n",
    b"_",
    b"loop_",
    b"data_",
    b"\nloop_",
    b"\ndata_",
    b"\n_",
    b"l",
    b"x",
    b" ",
    b";",
    b"\n;",
    b"#",
    b"\n#",
]


@pytest.mark.parametrize("seed", range(40))
def test_scans_agree_with_searches_on_random_texts(seed):
    rng = random.Random(seed)
    # few markers among many hits (more than the scans take one by one), or many markers
    weights = [1 if p.startswith(b"\n") and len(p) > 1 else rng.choice([1, 10, 30]) for p in PIECES]
    for _ in range(30):
        count = rng.choice([5, 50, 4 * _SCAN_HITS, 10 * _SCAN_HITS])
        text = b"".join(rng.choices(PIECES, weights, k=count))
        for start in {1, 2, 5, len(text) // 3, len(text) // 2, max(1, len(text) - 3), len(text)}:
            if not 1 <= start <= len(text):
                continue
            end = _loop_end(text, start)
            assert end == _loop_end_searched(text, start), (text, start)
            source, low, high = _comment_free(text, start, end)
            block = without_comment_lines(text[start:end])
            assert source[low:high] == block
            for byte in (b";", b"_", b"#"):
                assert _has_line_start(source, byte, low, high) == (b"\n" + byte in block)
        try:
            check_cif_complete(Path("x.cif"), b"data_x\n" + text + b"\n")
            refused = False
        except StructureError as exc:
            refused = "text field" in str(exc)
        assert refused == (text_fields(b"data_x\n" + text + b"\n") % 2 == 1)


def test_loop_end_with_many_underscores_before_the_marker():
    rows = b"".join(b"ATOM 1 C_%d x_y 1.0\n" % i for i in range(3 * _SCAN_HITS))
    for marker in (b"_next.tag x\n", b"loop_\n_x.y\n", b"data_other\n", b""):
        text = b"loop_\n_atom_site.a\n" + rows + marker
        start = _loop_header(text)[1]
        assert _loop_end(text, start) == _loop_end_searched(text, start)
        assert _loop_end(text, start) == (
            len(b"loop_\n_atom_site.a\n") + len(rows) - 1 if marker else len(text)
        )


def test_tokens_read_in_place_match_the_exact_tokenizer():
    """The loop read from offsets into the text, with its closing comment line or others."""
    rows = b"ATOM 1 N 1.000\nHETATM 2 'C1' -2.5\n"
    head = b"data_x\nloop_\n_atom_site.g\n_atom_site.id\n_atom_site.n\n_atom_site.x\n"
    for tail in (b"#\n", b"# closing\n_next.tag 1\n", b"", b"loop_\n_other.a\n1\n"):
        for inner in (b"", b"# inner comment\n"):
            text = head + rows + inner + rows + tail
            tokens = _cif.atom_site_tokens(text)
            assert tokens is not None, (tail, inner)
            columns = _cif.atom_site_columns(Path("x.cif"), text)
            assert columns is not None
            for tag, values in columns.items():
                assert tokens.strings(tag).tolist() == np.asarray(values, dtype=bytes).tolist()
            assert tokens.strings("n").tolist() == [b"N", b"C1", b"N", b"C1"]


def test_first_point_matches_a_search_of_each_value():
    """Where the first ``.`` of a value is (its length without one), as a search of the
    value gives it, wherever that is at most 8; above 8 both otherwise."""
    rng = random.Random(5)
    values = [b"1.5", b".", b"..", b"12345678.", b"123456789", b"12345678.9", b"1234567.89", b"-"]
    for _ in range(3000):
        length = rng.randint(1, 17)
        chars = rng.choices(b"0123456789.-x", [10] * 10 + [rng.choice([0, 1, 5]), 1, 1], k=length)
        values.append(bytes(chars))
    rows = [b"ATOM %d %s\n" % (i, v) for i, v in enumerate(values)]
    text = b"data_x\nloop_\n_atom_site.g\n_atom_site.id\n_atom_site.v\n" + b"".join(rows)
    tokens = _cif.atom_site_tokens(text)
    assert tokens is not None
    starts, ends = tokens.column("v")
    point = tokens._first_point(starts, ends - starts)
    for value, got in zip(values, point.tolist(), strict=True):
        found = value.find(b".")
        expected = found if found >= 0 else len(value)
        assert got == expected if expected <= 8 else got > 8, (value, got)
