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
