"""The fixed-column number reader gives exactly what float() and int() give, or declines."""

from __future__ import annotations

import numpy as np
import pytest

from protsteps.structure._fixed import field_words, fixed_integer, fixed_point


def rows_of(lines: list[bytes]) -> np.ndarray:
    width = len(lines[0])
    return np.frombuffer(b"".join(lines), dtype=np.uint8).reshape(-1, width)


def test_coordinates_equal_float_bit_for_bit():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.uniform(-999.999, 9999.999, 50_000), [0.0, -0.0004, 0.0005, -999.999]])
    fields = [f"{v:8.3f}".encode() for v in values.tolist()]
    lines = [b"ATOM" + b"x" * 26 + b"".join(fields[i : i + 3]) for i in range(0, len(fields) - 2, 3)]
    got = fixed_point(field_words(rows_of(lines), 54, 3), 3)
    expected = np.array([[float(line[30 + 8 * k : 38 + 8 * k]) for k in range(3)] for line in lines])
    assert got is not None
    assert got.tobytes() == expected.tobytes()  # same bits, signs of zero included


@pytest.mark.parametrize("decimals, width", [(2, 6), (3, 8), (1, 5)])
def test_narrow_fields_are_read_with_the_columns_before_them_ignored(decimals, width):
    values = [0.0, 1.0, -1.5, 0.33, 12.5, -0.01]
    fields = [f"{v:{width}.{decimals}f}".encode() for v in values]
    # digits before the field must not leak into its value
    lines = [b"9-9.9999" + field for field in fields]
    got = fixed_point(field_words(rows_of(lines), 8 + width, 1, width), decimals)
    assert got is not None
    assert got.ravel().tolist() == [float(f) for f in fields]


@pytest.mark.parametrize(
    "field",
    [
        b"  1.2345",
        b" +12.345",
        b" 1 2.345",
        b"12.345  ",
        b"   -.345",
        b"    .345",
        b"-  2.345",
        b"  1e2.00",
        b"        ",
        b"1-23.456",
        b"  12.3\xfa5",
        b"\xfa 12.345",
        b"  12,345",
        b"--12.345",
    ],
)
def test_other_layouts_are_declined(field):
    good = b"  12.345"
    assert fixed_point(field_words(rows_of([good, field]), 8), 3) is None


def test_residue_numbers_equal_int():
    fields = [f"{i:4d}".encode() for i in range(-999, 10_000)]
    got = fixed_integer(field_words(rows_of([b"ATOM  1234567890123456" + f for f in fields]), 26, 1, 4))
    assert got is not None
    assert got.ravel().tolist() == list(range(-999, 10_000))


@pytest.mark.parametrize("field", [b" 12 ", b"    ", b"1 23", b" +12", b" - 1", b"12-3", b"--12", b" 1A2"])
def test_integer_layouts_other_than_right_aligned_are_declined(field):
    assert fixed_integer(field_words(rows_of([b"  12", field]), 4, 1, 4)) is None


@pytest.mark.parametrize("base", [b"  12.345", b"-123.456", b"   0.000", b"1234.567"])
def test_every_byte_at_every_position_is_classified_exactly(base):
    """A field is read iff it matches ' *-?[0-9]+[.][0-9]{3}', and then as float() reads it."""
    import re

    layout = re.compile(rb" *-?[0-9]+\.[0-9]{3}")
    fields = [base[:k] + bytes([b]) + base[k + 1 :] for k in range(8) for b in range(256)]
    for field in fields:
        got = fixed_point(field_words(rows_of([field]), 8), 3)
        if layout.fullmatch(field):
            assert got is not None and got.item() == float(field), field
        else:
            assert got is None, field


@pytest.mark.parametrize("base", [b"  12", b" -12", b"1234", b"   0"])
def test_every_byte_of_a_residue_number_is_classified_exactly(base):
    import re

    layout = re.compile(rb" *-?[0-9]+")
    for field in [base[:k] + bytes([b]) + base[k + 1 :] for k in range(4) for b in range(256)]:
        got = fixed_integer(field_words(rows_of([b"ATOM" + field]), 8, 1, 4))
        if layout.fullmatch(field):
            assert got is not None and got.item() == int(field), field
        else:
            assert got is None, field
