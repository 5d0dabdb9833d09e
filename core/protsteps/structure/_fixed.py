"""Numbers in fixed columns, read from their bytes in a few integer operations.

PDB coordinate records write every number right-aligned in a fixed field: ``%8.3f`` for
coordinates, ``%6.2f`` for occupancies, ``%4d`` for residue numbers. Converting such a field
with ``float()`` (or numpy's string-to-float cast, which calls it per value) costs far more
than the arithmetic it stands for. Here each field, at most 8 bytes, is one 64-bit integer
(its first byte lowest); one pass of integer operations over a whole column checks every
field against the exact layout (blanks, an optional minus sign, digits, the point where the
format puts it) and a second turns its digits into the number, all bytes of a field at once
("SIMD within a register").

The result is exactly what ``float()`` gives: the digits form an integer ``n`` that float64
holds exactly, and ``n / 10**d`` is one correctly rounded division, the same rounding that
``float()`` applies to the decimal text. A column with any field in another layout (a plus
sign, an exponent, a number shifted left, blanks, a byte that is no ASCII) is not read here
(``None``), so that the caller can take the general conversion, and its error messages,
for that column.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "BLANKS",
    "blank_before",
    "byte_rows",
    "byte_words",
    "fixed_point",
    "fixed_integer",
    "fixed_digits",
    "field_words",
    "word",
    "zero_bytes",
]


def word(value: int) -> np.ndarray:
    """``value`` as a read-only 0-d uint64 array. numpy applies an operation between an array
    and a 0-d array in a little over half the time it takes with a numpy scalar
    (``np.uint64``), whose type it resolves again at every call: 1.0 against 1.8 us on 51
    values on this project's test machine, most of an operation's time on a small file's
    column."""
    constant = np.array(value, dtype=np.uint64)
    constant.flags.writeable = False
    return constant


_HIGH = word(0x8080808080808080)
_LOW7 = word(0x7F7F7F7F7F7F7F7F)
_NIBBLE_LOW = word(0x0F0F0F0F0F0F0F0F)
_TEN_BELOW = word(0x7676767676767676)  # 0x80 - 10 in every byte
_ZEROS = word(0x3030303030303030)
#: eight ASCII blanks in one word (also the blank fill of the mmCIF reader)
BLANKS = word(0x2020202020202020)
_MINUS = word(0x2D2D2D2D2D2D2D2D)
_U7, _U8, _U16, _U32 = (word(n) for n in (7, 8, 16, 32))
_FF, _TEN = word(0xFF), word(10)
_PAIRS = word(0x000000FF000000FF)
_HIGH_PAIR, _LOW_PAIR = word(100 + (1000000 << 32)), word(1 + (10000 << 32))


def field_words(rows: np.ndarray, end: int, fields: int = 1, width: int = 8) -> np.ndarray:
    """[lines, fields] uint64: ``fields`` adjacent fields of ``width`` (<= 8) columns, the
    last ending at column ``end`` of ``rows`` ([lines, columns] uint8), each as the 8 bytes
    that end where it ends (first byte lowest), the columns before the field blanked."""
    first = end - fields * width
    if width == 8:
        block = np.ascontiguousarray(rows[:, first:end])
        return block.view("<u8").reshape(len(rows), fields)
    starts = first + width * np.arange(1, fields + 1) - 8
    if starts.min() >= 0:
        block = np.stack([rows[:, s : s + 8] for s in starts.tolist()], axis=1)
    else:  # a field near the start of the line: blanks stand in for what precedes it
        padded = np.concatenate((np.full((len(rows), 8), 32, np.uint8), rows), axis=1)
        block = np.stack([padded[:, s + 8 : s + 16] for s in starts.tolist()], axis=1)
    return blank_before(np.ascontiguousarray(block).view("<u8").reshape(len(rows), fields), width)


def blank_before(words: np.ndarray, width: int) -> np.ndarray:
    """``words`` (uint64, each the 8 bytes that end where a ``width``-column field ends, first
    byte lowest) with the ``8 - width`` bytes before the field made blanks."""
    keep, blanks = _lead_masks(width)
    return (words & keep) | blanks


@functools.lru_cache(maxsize=8)
def _lead_masks(width: int) -> tuple[np.ndarray, np.ndarray]:
    """The field's bytes, and blanks in the ``8 - width`` bytes before it, as words."""
    lead = (1 << (8 * (8 - width))) - 1  # the bytes before the field
    return word(~lead & 0xFFFFFFFFFFFFFFFF), word(int(BLANKS) & lead)


def byte_words(buffer: np.ndarray) -> np.ndarray:
    """[len(buffer) - 7] little-endian uint64: the 8 bytes of ``buffer`` (contiguous uint8)
    from each offset, as a view (unaligned, one byte apart). ``byte_words(b)[offsets]`` moves
    one integer per offset, several times faster than rows of a sliding window view."""
    count = max(len(buffer) - 7, 0)
    return np.ndarray(shape=(count,), dtype="<u8", buffer=buffer, strides=(1,))


def byte_rows(buffer: np.ndarray, width: int) -> np.ndarray:
    """[len(buffer) - width + 1, width] uint8: the ``width`` bytes of ``buffer`` (contiguous
    uint8) from each offset, as a view; ``byte_rows(b, w)[offsets]`` copies those rows. The
    same windows as numpy's ``sliding_window_view``, made without its checks (40 us against
    3 on this project's test machine, for a view that is then indexed once)."""
    count = max(len(buffer) - width + 1, 0)
    return np.ndarray(shape=(count, width), dtype=np.uint8, buffer=buffer, strides=(1, 1))


def zero_bytes(x: np.ndarray) -> np.ndarray:
    """The high bit of every byte of ``x`` that is 0 (exact: no carry crosses bytes)."""
    return ~(((x & _LOW7) + _LOW7) | x | _LOW7)


def _classes(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """High-bit masks of the digit, blank and minus bytes of each word."""
    # A digit is a byte t = b ^ 0x30 below 10: its low 7 bits plus 0x76 stay below 0x80 and
    # its own high bit is clear (the sum of a byte's low 7 bits and 0x76 never carries over).
    shifted = words ^ _ZEROS
    digit = ~(((shifted & _LOW7) + _TEN_BELOW) | shifted) & _HIGH
    return digit, zero_bytes(words ^ BLANKS), zero_bytes(words ^ _MINUS)


def _byte_bits(positions: range | list[int]) -> np.ndarray:
    return word(sum(0x80 << (8 * k) for k in positions))


@functools.lru_cache(maxsize=16)
def _layout_masks(point: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a point at byte ``point``: the bytes that must be digits, the point byte's mask
    and value, and the bytes before the last integer digit (made once per layout)."""
    required = _byte_bits([point - 1, *range(point + 1, 8)])
    field = word(0xFF << (8 * point) if point < 8 else 0)
    dot = word(0x2E << (8 * point) if point < 8 else 0)
    return required, field, dot, _byte_bits(range(point - 1))


def _layout_ok(
    words: np.ndarray, digit: np.ndarray, blank: np.ndarray, minus: np.ndarray, point: int
) -> bool:
    """Bytes ``0..point-1`` hold blanks, then an optional minus, then at least one digit;
    with ``point`` < 8 that byte is ``.`` and every byte after it a digit."""
    required, field, dot, lead = _layout_masks(point)
    # blank, or (minus or digit) followed by a digit
    ok = blank | ((minus | digit) & (digit >> _U8))
    # any bit set: a required digit missing, a lead byte out of place, or no point at ``point``
    wrong = (required & ~digit) | (lead & ~ok)
    if point < 8:
        wrong |= (words & field) ^ dot
    return not wrong.any()


@functools.lru_cache(maxsize=16)
def _sign_bytes(point: int) -> np.ndarray:
    return _byte_bits(range(point))


def _value(words: np.ndarray, digit: np.ndarray) -> np.ndarray:
    """The eight bytes' digits (non-digits read as 0) as one 8-digit integer, the first
    byte the most significant."""
    x = words & _NIBBLE_LOW & ((digit >> _U7) * _FF)
    x = x * _TEN + (x >> _U8)  # bytes 0, 2, 4, 6: two-digit numbers
    low = x & _PAIRS
    high = (x >> _U16) & _PAIRS
    return (low * _HIGH_PAIR + high * _LOW_PAIR) >> _U32


def fixed_point(
    words: np.ndarray, decimals: int, rows: np.ndarray | tuple[slice, np.ndarray] | None = None
) -> np.ndarray | None:
    """Values of right-aligned ``%w.<decimals>f`` fields (see :func:`field_words`), or
    ``None`` if any field has another layout. Returns float64 of ``words``' shape (of
    ``words[rows]``'s when ``rows``, an index, is given: every field is checked, only those
    are read), equal to ``float()`` of each field's text."""
    digit, blank, minus = _classes(words)
    point = 7 - decimals
    if not _layout_ok(words, digit, blank, minus, point):
        return None
    if rows is not None:
        words, digit, minus = words[rows], digit[rows], minus[rows]
    # The point reads as a 0 digit: n8 = integer part * 10**(decimals + 1) + fraction.
    n8 = _value(words, digit)
    scale = word(10 ** (decimals + 1))
    number = (n8 - (n8 // scale) * word(9 * 10**decimals)).astype(np.float64)
    number /= 10.0**decimals
    negative = (minus & _sign_bytes(point)) != 0
    return np.negative(number, out=number, where=negative)


def fixed_integer(words: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray | None:
    """Values of right-aligned ``%wd`` fields (see :func:`field_words`), or ``None`` if any
    field has another layout. Returns int64 of ``words``' shape (of ``words[rows]``'s when
    ``rows`` is given: every field is checked, only those are read)."""
    digit, blank, minus = _classes(words)
    if not _layout_ok(words, digit, blank, minus, 8):
        return None
    if rows is not None:
        words, digit, minus = words[rows], digit[rows], minus[rows]
    number = _value(words, digit).astype(np.int64)
    return np.where(minus != 0, -number, number)


def fixed_digits(words: np.ndarray) -> np.ndarray | None:
    """Values of right-aligned unsigned integers (blanks, then at least one digit), or
    ``None`` if any field has another layout. Returns int64 of ``words``' shape."""
    digit, blank, _ = _classes(words)
    if not _layout_ok(words, digit, blank, np.zeros_like(words), 8):
        return None
    return _value(words, digit).astype(np.int64)
