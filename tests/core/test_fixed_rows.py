"""The fixed-column reader asked for some rows (every field checked, only those read) gives
those rows of the whole reading, bit for bit, and declines exactly when it would."""

from __future__ import annotations

import numpy as np
import pytest

from protsteps.structure._fixed import field_words, fixed_integer, fixed_point


def rows_of(lines: list[bytes]) -> np.ndarray:
    width = len(lines[0])
    return np.frombuffer(b"".join(lines), dtype=np.uint8).reshape(-1, width)


@pytest.mark.parametrize("seed", range(5))
def test_some_rows_equal_the_whole_reading(seed):
    rng = np.random.default_rng(seed)
    values = rng.uniform(-999.999, 9999.999, 3000)
    values[rng.integers(0, 3000, 20)] = -0.0  # signed zeros keep their sign
    numbers = rng.integers(-999, 9999, 1000)
    lines = [
        b"ATOM  "
        + b"x" * 16
        + b"%4d" % n
        + b"xxxx"
        + b"".join(b"%8.3f" % v for v in values[3 * i : 3 * i + 3])
        for i, n in enumerate(numbers.tolist())
    ]
    table = rows_of(lines)
    for rows in (
        np.arange(0),
        np.arange(1000),
        np.sort(rng.choice(1000, 300, replace=False)),
        np.array([5, 5, 0]),
    ):
        whole = fixed_point(field_words(table, 54, 3), 3)
        some = fixed_point(field_words(table, 54, 3), 3, rows)
        assert whole is not None and some is not None
        assert some.tobytes() == whole[rows].tobytes()
        integers = fixed_integer(field_words(table, 26, 1, 4))
        assert integers is not None
        assert np.array_equal(fixed_integer(field_words(table, 26, 1, 4), rows), integers[rows])


def test_a_bad_field_outside_the_rows_still_declines():
    lines = [b"%4d%8.3f" % (i, i / 7) for i in range(10)]
    lines[7] = b"   7  1.2e+3"  # not the %8.3f layout, in a row not asked for
    table = rows_of(lines)
    assert fixed_point(field_words(table, 12, 1), 3, np.array([0, 1])) is None
    lines[7] = b"  x7   1.000"
    assert fixed_integer(field_words(rows_of(lines), 4, 1, 4), np.array([0, 1])) is None


def atom_rows(text: bytes) -> np.ndarray:
    lines = [line[:60].ljust(60) for line in text.splitlines() if line[:6] in (b"ATOM  ", b"HETATM")]
    return rows_of(lines) if lines else np.zeros((0, 60), np.uint8)


def _words_from(rows: np.ndarray, column: int) -> np.ndarray:
    """Each row's eight bytes from ``column`` (0-based) as one little-endian word."""
    return np.ascontiguousarray(rows[:, column : column + 8]).view("<u8").reshape(-1)


def test_residue_numbers_by_runs_equal_every_row_read(structures_dir):
    """Each run of equal residue-number fields read once gives every row's number, on the
    atom lines of every shared PDB file, and declines exactly when the whole reading does."""
    import gzip

    from protsteps.structure._columnar import _residue_numbers

    rng = np.random.default_rng(0)
    files = sorted(p for p in structures_dir.rglob("*.pdb*") if p.is_file())
    assert len(files) > 100
    for path in files[::3]:
        data = path.read_bytes()
        table = atom_rows(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        match = (
            np.sort(rng.choice(len(table), min(len(table), 200), replace=False))
            if len(table)
            else np.arange(0)
        )
        whole = fixed_integer(field_words(table, 26, 1, 4), match)
        got = _residue_numbers(_words_from(table, 18), match)
        assert (got is None) == (whole is None), path
        if got is not None:
            assert np.array_equal(got, whole.reshape(-1)), path
    lines = [b"ATOM  " + b"x" * 16 + b"%4d" % (i // 3) + b"x" * 34 for i in range(30)]
    for bad in (b" 1 2", b"+  1", b"   x", b"1   "):
        broken = list(lines)
        broken[17] = broken[17][:22] + bad + broken[17][26:]
        assert _residue_numbers(_words_from(rows_of(broken), 18), np.arange(3)) is None
    assert _residue_numbers(_words_from(rows_of(lines), 18), np.arange(30)).tolist() == [
        i // 3 for i in range(30)
    ]
