"""The ``_atom_site`` loop of an mmCIF file, read whole or refused.

Values are tokenized as Bio.PDB's ``MMCIF2Dict`` does (the reference reader's tokenizer), so
that both readers see the same atoms: white space is blanks and tabs, a quote opens a value
only at the start of a token and closes it only before white space, ``#`` starts a comment
outside a value, a line starting with ``;`` opens a text field that the next such line closes,
``?`` and ``.`` are values like any other (their meaning is decided per column). The loop ends
at a data name at a row boundary, at ``loop_`` or at ``data_``; a loop whose values do not fill
its last row, that ends inside a quoted value or a text field, or whose last value is cut off
by the end of the file is refused: a truncated or malformed file is not read in part.

Most files take a fast path (the loop's bytes split on white space at once); anything it does
not expect (comments or text fields inside the loop, quoted values holding spaces, unusual
control bytes) is read line by line with the exact rules.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from ..errors import StructureError
from ._complete import line_number
from ._fixed import BLANKS, byte_rows, byte_words, fixed_digits, word, zero_bytes

__all__ = ["AtomSiteTokens", "atom_site_columns", "atom_site_tokens"]

_TAG = b"_atom_site."
_COMMENT_LINES = re.compile(rb"\n#[^\n]*")
_QUOTES = "'\""
_BLANKS = " \t"


class _Malformed(Exception):
    """Where the loop stops making sense, in words, and the byte offset."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what)
        self.what = what
        self.offset = offset


def atom_site_columns(path: Path, text: bytes) -> dict[str, list[bytes]] | None:
    """The ``_atom_site`` loop's columns (tag without the ``_atom_site.`` prefix -> one value
    per row, quotes removed); ``None`` when the file has no ``_atom_site`` loop laid out as
    writers lay it out (``loop_`` then one tag per line), for the caller to read otherwise.

    Raises
    ------
    StructureError
        The loop is truncated or malformed; the message names the file, the reason and the
        line.
    """
    header = _loop_header(text)
    if header is None:
        return None
    tags, start = header
    try:
        tokens = _fast_tokens(text, start, len(tags))
        if tokens is None:
            tokens = _exact_tokens(text, start, len(tags))
    except _Malformed as exc:
        raise StructureError(
            f"{path}: truncated or malformed _atom_site loop: {exc.what} (line "
            f"{line_number(text, exc.offset)}); re-download or repair the file"
        ) from None
    width = len(tags)
    return {tag: tokens[i::width] for i, tag in enumerate(tags)}


def _loop_header(text: bytes) -> tuple[list[str], int] | None:
    """The loop's tags and the offset where its values start."""
    tag_at = text.find(b"\n" + _TAG)
    if tag_at < 0:
        if not text.startswith(_TAG):
            return None
        tag_at = -1
    loop_at = text.rfind(b"\nloop_", 0, tag_at + 1)
    if loop_at < 0 and text.startswith(b"loop_"):
        loop_at = -1
    elif loop_at < 0:
        return None
    if text[loop_at + 6 : tag_at + 1].strip():
        return None
    tags: list[str] = []
    position = tag_at + 1
    while text.startswith(_TAG, position):
        line_end = text.find(b"\n", position)
        line_end = len(text) if line_end < 0 else line_end
        fields = text[position:line_end].split()
        if len(fields) != 1:
            return None
        tags.append(fields[0][len(_TAG) :].decode("latin-1"))
        position = line_end + 1
    return tags, min(position, len(text))


def _loop_end(text: bytes, start: int) -> int:
    """Where the loop's values end at the latest on the fast path: a line that starts with a
    data name, ``loop_`` or ``data_``.

    Each of these ends in a ``_``, a byte that loop values seldom hold: the underscores
    after ``start`` are found by ``bytes.find`` of one byte (a ``memchr``, many times faster
    than a search for a two-byte string), and the first one that completes a line-start
    ``_``, ``loop_`` or ``data_`` is the end. (No earlier marker can start after an
    underscore that completes one: ``loop`` and ``data`` hold no underscore.) After
    :data:`_SCAN_HITS` other underscores, the searches below take over."""
    position = start
    for _ in range(_SCAN_HITS):
        found = text.find(b"_", position)
        if found < 0:
            return len(text)
        if text[found - 1] == 10:
            return found - 1
        if found - 5 >= start - 1 and text[found - 5 : found + 1] in _WORD_MARKERS:
            return found - 5
        position = found + 1
    return _loop_end_searched(text, start)


#: occurrences of a byte that :func:`_loop_end` and :func:`_has_line_start` look at one by
#: one before a plain search takes over
_SCAN_HITS = 64
_WORD_MARKERS = (b"\nloop_", b"\ndata_")


def _has_line_start(source: bytes, byte: bytes, low: int = 0, high: int | None = None) -> bool:
    """Whether a line of ``source[low:high]`` after its first starts with ``byte`` (as
    ``b"\\n" + byte in source[low:high]`` says, without the copy), found through the
    occurrences of ``byte`` alone (one-byte searches are ``memchr``); after
    :data:`_SCAN_HITS` occurrences elsewhere, the plain search."""
    high = len(source) if high is None else high
    position = low + 1
    for _ in range(_SCAN_HITS):
        found = source.find(byte, position, high)
        if found < 0:
            return False
        if source[found - 1] == 10:
            return True
        position = found + 1
    return source.find(b"\n" + byte, position - 1, high) >= 0


def _loop_end_searched(text: bytes, start: int) -> int:
    """:func:`_loop_end` by searches for the markers themselves."""
    end = text.find(b"\n_", start - 1)
    end = len(text) if end < 0 else end
    # loop_ and data_ only matter before the next data name: search no further (the
    # _atom_site loop is often the file's last, and a search to its end reads megabytes)
    for marker in (b"\nloop_", b"\ndata_"):
        found = text.find(marker, start - 1, end)
        if found >= 0:
            end = found
    return end


def _fast_block(text: bytes, start: int) -> bytes | None:
    """The loop's values as one block of bytes (comment lines removed) that splitting on
    white space reads as the exact rules do, or ``None`` where it would not."""
    end = _loop_end(text, start)
    block = _without_comment_lines(text[start:end])
    if _unusual(block) or _has_line_start(block, b";") or block.startswith(b";"):
        return None
    if end == len(text) and not text.endswith(b"\n") and text[text.rfind(b"\n") + 1 :].strip():
        return None
    return block


def _without_comment_lines(block: bytes) -> bytes:
    """The block without its lines starting with ``#`` (those the exact rules skip)."""
    source, low, high = _comment_free(block, 0, len(block))
    return source[low:high]


def _comment_free(text: bytes, start: int, end: int) -> tuple[bytes, int, int]:
    """``text[start:end]`` without its lines starting with ``#``, as ``(source, low, high)``:
    ``source[low:high]`` is that block. The usual case, a ``#`` line closing the loop at the
    block's end, is cut off by offsets into ``text`` (no copy, no regular expression);
    otherwise the comment lines are removed from a copy."""
    last = text.rfind(b"\n#", start, end)
    if (
        last >= 0
        and text.find(b"#", start, end) == last + 1
        and text.find(b"\n", last + 1, end) in (-1, end - 1)
    ):
        return text, start, last + 1
    if text.find(b"#", start, end) >= 0:
        block = b"".join(_COMMENT_LINES.split(b"\n" + text[start:end]))
        return block, 0, len(block)
    return text, start, end


def _unusual(block: bytes) -> bool:
    """Whether the block holds what the fast path cannot read as Bio.PDB's tokenizer does: a
    ``#`` (comment lines are removed before), a carriage return not followed by a line feed,
    a control byte Python takes for white space, or a data name, ``loop_`` or ``data_``
    after a blank (a new item in mid-line). A line-start ``;`` (a text field) is looked for
    separately. Searches for fixed strings, not a regular expression (which stops at every
    blank, slow on a loop of megabytes)."""
    if b"#" in block or block.count(b"\r") != block.count(b"\r\n"):
        return True
    if len(block.translate(None, _CONTROL)) != len(block):
        return True
    if b" _" in block or b"\t_" in block:
        return True
    lower = block.lower()
    return any(blank + word in lower for blank in (b" ", b"\t") for word in (b"loop_", b"data_"))


_CONTROL = b"\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0"


def _fast_tokens(text: bytes, start: int, width: int) -> list[bytes] | None:
    """The loop's values by one split of its bytes, or ``None`` where that would not read
    them as the exact rules do."""
    block = _fast_block(text, start)
    if block is None:
        return None
    tokens = block.split()
    if b"'" in block or b'"' in block:
        unquoted = []
        for token in tokens:
            if token[:1] in (b"'", b'"'):
                if len(token) < 2 or token[-1:] != token[:1]:
                    return None
                token = token[1:-1]
            unquoted.append(token)
        tokens = unquoted
    if len(tokens) % width:
        return None
    return tokens


class AtomSiteTokens:
    """The ``_atom_site`` loop as token offsets into one block of bytes, for reading whole
    columns with numpy instead of one bytes object per value.

    tags: the loop's tags (without ``_atom_site.``); block: [B] uint8, the loop's values;
    starts, ends: [rows, len(tags)] int64, each value's offsets in ``block`` (quotes
    excluded). ``padded`` is ``block`` with 8 blanks before it and 16 zero bytes after it, so
    that an 8- or 16-byte window fits around any value (offsets into it are shifted by 8).
    """

    def __init__(
        self,
        tags: list[str],
        block: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        padded: np.ndarray | None = None,
    ) -> None:
        self.tags = tags
        self.block = block
        self.starts = starts
        self.ends = ends
        if padded is None:
            padded = np.concatenate((np.full(8, 32, np.uint8), block, np.zeros(16, np.uint8)))
        self.padded = padded
        self._columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def rows(self) -> int:
        return len(self.starts)

    def column(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """A column's value offsets, (starts, ends), each contiguous (made once per tag:
        a column of the [rows, tags] tables is read several times)."""
        found = self._columns.get(tag)
        if found is None:
            index = self.tags.index(tag)
            found = np.ascontiguousarray(self.starts[:, index]), np.ascontiguousarray(self.ends[:, index])
            self._columns[tag] = found
        return found

    def strings(self, tag: str, rows: np.ndarray | None = None) -> np.ndarray:
        """[rows] bytes (numpy ``S``) values of a column (of ``rows`` only, if given), as
        ``np.asarray(values, bytes)`` gives them."""
        starts, ends = self.column(tag)
        if rows is not None:
            starts, ends = starts[rows], ends[rows]
        lengths = ends - starts
        width = int(lengths.max(initial=1))
        padded = self.padded if width <= 16 else np.concatenate((self.padded, np.zeros(width, np.uint8)))
        if width <= 8:
            # each value's first 8 bytes as one integer, the bytes past its end cleared
            words = (byte_words(self.padded)[starts + 8] & _LOW_BYTES[lengths]).astype("<u8", copy=False)
            values = words.view(np.uint8).reshape(-1, 8)[:, :width]
            return np.ascontiguousarray(values).view(f"S{width}").reshape(-1)
        values = byte_rows(padded, width)[starts + 8]
        values[np.arange(width)[None, :] >= lengths[:, None]] = 0
        return values.view(f"S{width}").reshape(-1)

    def words(self, tag: str) -> np.ndarray | None:
        """[rows] uint64: each value right-aligned in 8 bytes, blanks before it (see
        :func:`protsteps.structure._fixed.field_words`); ``None`` when one is longer."""
        starts, ends = self.column(tag)
        lengths = ends - starts
        if not len(lengths) or int(lengths.max()) > 8:
            return None
        return self._right_aligned(starts, ends)

    def _right_aligned(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """[n] uint64: the bytes ``starts``..``ends`` (at most 8) right-aligned, blanks
        before them."""
        words = byte_words(self.padded)[ends]
        lead = _LEAD_BYTES[ends - starts]  # the bytes before the value
        return (words & ~lead) | (BLANKS & lead)

    def _first_point(self, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """[n] int64: where the first ``.`` of each value is (counted from ``first``), or
        its length when there is none, wherever that is at most 8; otherwise some number
        above 8. The first 8 bytes are one integer: its ``.`` bytes marked by their high
        bits (no carry crosses bytes), the lowest mark's byte number read off a multiply."""
        head = byte_words(self.padded)[first + 8]
        dots = zero_bytes(head ^ _POINTS) & _HIGH_BITS[np.minimum(lengths, 8)]
        lowest = (dots & (~dots + _ONE)) >> _SEVEN  # 1 << 8 * index, or 0
        index = ((lowest * _BYTE_NUMBERS) >> _TOP_BYTE).astype(np.int64)
        ninth = (lengths >= 9) & (self.padded[first + 16] == _POINT_BYTE)
        return np.where(dots != 0, index, np.where(ninth, 8, lengths))

    def decimals(self, tag: str) -> np.ndarray | None:
        """[rows] float64: the values of a column written ``[-]digits[.digits]`` (at most 8
        digits before the point and 8 after it, 15 in all), exactly as ``float()`` reads
        them; ``None`` if any value is written otherwise. The digits make an integer ``n``
        below 10**15 and the value is ``n / 10**d``, one correctly rounded division."""
        starts, ends = self.column(tag)
        if not len(starts):
            return None
        negative = self.block[starts] == _MINUS_BYTE
        first = starts + negative
        lengths = ends - first
        if int(lengths.max()) > 17 or int(lengths.min()) < 1:
            return None
        point = self._first_point(first, lengths)
        places = np.maximum(lengths - point - 1, 0)
        if int(point.max()) > 8 or int(point.min()) < 1 or int(places.max()) > 8:
            return None
        if int((point + places).max()) > 15 or bool(((places == 0) & (point < lengths)).any()):
            return None  # too many digits to be exact, or a point without digits after it
        whole = fixed_digits(self._right_aligned(first, first + point))
        fraction = np.zeros(len(starts), dtype=np.int64)
        with_fraction = np.flatnonzero(places)
        if len(with_fraction):
            digits = fixed_digits(
                self._right_aligned(ends[with_fraction] - places[with_fraction], ends[with_fraction])
            )
            if digits is None:
                return None
            fraction[with_fraction] = digits
        if whole is None:
            return None
        scale = 10.0**places
        number = (whole * scale + fraction) / scale  # whole * scale and the sum are exact
        return np.negative(number, out=number, where=negative)


def atom_site_tokens(text: bytes) -> AtomSiteTokens | None:
    """The ``_atom_site`` loop as token offsets, or ``None`` wherever it cannot be read by
    splitting on white space as the exact rules read it (or the loop is not there): the
    caller then reads the loop with :func:`atom_site_columns`, which refuses what must be
    refused. Where both read a loop, they read the same values.

    The checks of the fast path are made on the tokens, with numpy: no value may start with
    ``_``, ``loop_`` or ``data_`` (in any case: a new item), and white space may only be
    blanks, tabs and line breaks; a non-ASCII byte, a ``#`` left after the comment lines are
    removed, a line-start ``;`` or a carriage return without a line feed leave the loop to
    the exact rules too.
    """
    header = _loop_header(text)
    if header is None:
        return None
    tags, start = header
    end = _loop_end(text, start)
    # the block of values is source[low:high], read in place: no copy of it but ``padded``
    source, low, high = _comment_free(text, start, end)
    if (
        source.find(b"#", low, high) >= 0
        or _has_line_start(source, b";", low, high)
        or source.startswith(b";", low, high)
    ):
        return None
    # (a count of one byte reads every byte; a search stops at the first: counted only if there)
    returns = source.count(b"\r", low, high) if source.find(b"\r", low, high) >= 0 else 0
    tabs = source.count(b"\t", low, high) if source.find(b"\t", low, high) >= 0 else 0
    if returns and returns != source.count(b"\r\n", low, high):
        return None
    if end == len(text) and not text.endswith(b"\n") and text[text.rfind(b"\n") + 1 :].strip():
        return None
    size = high - low
    if not size:
        return None
    padded = np.empty(size + 24, dtype=np.uint8)  # see AtomSiteTokens
    padded[:8] = 32
    padded[8 + size :] = 0
    data = padded[8 : 8 + size]
    data[:] = np.frombuffer(source, dtype=np.uint8, count=size, offset=low)
    if int(data.max()) >= 128:
        return None  # not ASCII
    # white space, with white space before and after the block; each new temporary of the
    # block's size costs its page faults too, so there are few
    blank = np.empty(size + 2, dtype=bool)
    blank[0] = blank[-1] = True
    np.less_equal(data, 32, out=blank[1:-1])
    breaks = int(np.count_nonzero(data == 10))
    if int(np.count_nonzero(data < 32)) != breaks + returns + tabs:
        return None  # another control byte: white space to bytes.split(), not to the exact rules
    # where white space and values meet: the starts and ends of the values, alternately
    bounds = np.flatnonzero(blank[1:] != blank[:-1])
    starts, ends = bounds[0::2], bounds[1::2]
    width = len(tags)
    if len(starts) == 0 or len(starts) % width:
        return None
    first = data[starts]
    if (first == _UNDERSCORE).any():
        return None
    folded = first | 0x20
    maybe_word = np.flatnonzero((folded == ord("l")) | (folded == ord("d")))
    if len(maybe_word):
        heads = byte_words(padded)[starts[maybe_word] + 8]
        heads = (heads | _LOWER_FOUR) & _FIVE_BYTES
        if ((heads == _LOOP) | (heads == _DATA)).any():
            return None
    quoted = np.flatnonzero((first == 39) | (first == 34))
    if len(quoted):
        closed = (ends[quoted] - starts[quoted] >= 2) & (data[ends[quoted] - 1] == first[quoted])
        if not closed.all():
            return None
        starts[quoted] += 1
        ends[quoted] -= 1
    pairs = bounds.reshape(-1, width, 2)  # [rows, tags, (start, end)]: views, not copies
    return AtomSiteTokens(tags, data, pairs[:, :, 0], pairs[:, :, 1], padded)


_UNDERSCORE = ord("_")
#: by a value's length k (0..8): the mask of its k bytes in a word that starts with it, and
#: of the 8 - k bytes before it in a word that ends with it
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_LEAD_BYTES = np.array([(1 << (8 * (8 - k))) - 1 for k in range(9)], dtype=np.uint64)
#: by k (0..8): the high bits of a word's first k bytes
_HIGH_BITS = np.array([sum(0x80 << (8 * j) for j in range(k)) for k in range(9)], dtype=np.uint64)
_POINTS = word(0x2E2E2E2E2E2E2E2E)
#: (1 << 8 * k) times this holds k in its top byte (k = 0..7)
_BYTE_NUMBERS = word(sum(j << (56 - 8 * j) for j in range(8)))
_MINUS_BYTE, _POINT_BYTE = ord("-"), ord(".")
_ONE, _SEVEN, _TOP_BYTE = word(1), word(7), word(56)
_LOWER_FOUR = word(0x20202020)  # lower case for the four letters of loop_ and data_
_FIVE_BYTES = word((1 << 40) - 1)
_LOOP = word(int.from_bytes(b"loop_", "little"))
_DATA = word(int.from_bytes(b"data_", "little"))


def _exact_tokens(text: bytes, start: int, width: int) -> list[bytes]:
    """The loop's values line by line, with the rules of Bio.PDB's ``MMCIF2Dict``."""
    tokens: list[str] = []
    handle = io.StringIO(text[start:].decode("latin-1"))
    offset = start
    last_line_had_values = False
    for line in handle:
        line_offset = offset
        offset += len(line.encode("latin-1"))
        last_line_had_values = False
        if line.startswith("#"):
            continue
        if line.startswith(";"):
            field = [line[1:].rstrip()]
            for line in handle:
                offset += len(line.encode("latin-1"))
                line = line.rstrip()
                if line.startswith(";"):
                    tokens.append("\n".join(field))
                    line = line[1:]
                    if line and line[0] not in _BLANKS:
                        raise _Malformed("no white space after a text field's closing ';'", offset - 1)
                    break
                field.append(line)
            else:
                raise _Malformed("a ';' text field is never closed", line_offset)
        for token, quoted in _split(line.strip(), line_offset):
            if token.lower() == "loop_" or (not quoted and token.lower().startswith("data_")):
                return _complete(tokens, width, line_offset)
            if token.startswith("_") and len(tokens) % width == 0:
                return _complete(tokens, width, line_offset)
            tokens.append(token)
            last_line_had_values = True
    if last_line_had_values and not text.endswith(b"\n"):
        raise _Malformed("the file ends without a line break after the loop's last value", offset - 1)
    return _complete(tokens, width, offset - 1)


def _complete(tokens: list[str], width: int, offset: int) -> list[bytes]:
    if len(tokens) % width:
        raise _Malformed(
            f"{len(tokens)} values do not fill rows of {width} ({len(tokens) % width} left over)", offset
        )
    return [token.encode("latin-1") for token in tokens]


def _split(line: str, offset: int) -> list[tuple[str, bool]]:
    """``MMCIF2Dict._splitline``: the tokens of one line and whether each was quoted."""
    if not any(c in line for c in "'\"#"):
        return [(token, False) for token in line.replace("\t", " ").split(" ") if token]
    out: list[tuple[str, bool]] = []
    in_token = False
    quote = ""
    begin = 0
    for i, c in enumerate(line):
        if c in _BLANKS:
            if in_token and not quote:
                in_token = False
                out.append((line[begin:i], False))
        elif c in _QUOTES:
            if not quote and not in_token:
                quote = c
                in_token = True
                begin = i + 1
            elif c == quote and (i + 1 == len(line) or line[i + 1] in _BLANKS):
                quote = ""
                in_token = False
                out.append((line[begin:i], True))
        elif c == "#" and not in_token:
            return out
        elif not in_token:
            in_token = True
            begin = i
    if quote:
        raise _Malformed("a quoted value is never closed on its line", offset)
    if in_token:
        out.append((line[begin:], False))
    return out
