"""Whole files or nothing: the signs that a structure file was cut short.

A download or copy that stops early leaves a file that both readers could otherwise read in
part, returning the residues that happened to arrive. These checks run before either reader
(so the two refuse the same files) and look only at what the file itself implies about its
end: a coordinate record cut mid-line, a MODEL never closed, chains closed by TER except the
last, an mmCIF value or row cut off. A file cut exactly at a line boundary with nothing left
to imply what is missing (no TER, END or MODEL records) cannot be told from a shorter complete
file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StructureError
from ._fixed import word

__all__ = ["check_pdb_complete", "check_cif_complete", "line_number"]

# Records whose numbers Bio.PDB parses, and the column where the last number they need ends.
_NUMERIC_RECORDS = {b"ATOM": 54, b"HETATM": 54, b"ANISOU": 70, b"SIGATM": 66, b"SIGUIJ": 70}

# PDB record names (format 3.3 and the few older or tool-written ones seen in the wild); a
# final line without a line break that starts with anything else was cut mid-record.
_PDB_RECORDS = frozenset(
    b"""HEADER OBSLTE TITLE SPLIT CAVEAT COMPND SOURCE KEYWDS EXPDTA NUMMDL MDLTYP AUTHOR
    REVDAT SPRSDE JRNL REMARK DBREF DBREF1 DBREF2 SEQADV SEQRES MODRES HET HETNAM HETSYN
    FORMUL HELIX SHEET SSBOND LINK CISPEP SITE CRYST1 ORIGX1 ORIGX2 ORIGX3 SCALE1 SCALE2
    SCALE3 MTRIX1 MTRIX2 MTRIX3 MODEL ATOM ANISOU TER HETATM ENDMDL CONECT MASTER END
    SIGATM SIGUIJ USER TVECT FTNOTE""".split()
)

_HINT = "re-download or repair the file"
_SEMICOLON, _LINE_FEED = ord(";"), ord("\n")


def line_number(text: bytes, offset: int) -> int:
    """The 1-based number of the line holding byte ``offset``."""
    return text.count(b"\n", 0, offset) + 1


def _truncated(path: Path, what: str, line: int) -> StructureError:
    return StructureError(f"{path}: truncated file: {what} (line {line}); {_HINT}")


def _record_start(text: bytes, record: bytes, last: bool = True) -> int:
    """Offset of the first (or last) line starting with ``record``; -1 if none."""
    at = text.rfind(b"\n" + record) if last else text.find(b"\n" + record)
    if at >= 0:
        return at + 1
    return 0 if text.startswith(record) else -1


def check_pdb_complete(path: Path, text: bytes, heads: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Refuse a PDB file that shows it was cut short.

    - its last line has no line break and is cut mid-record: a record name that is no PDB
      record, or a coordinate record (ATOM, HETATM, ANISOU, ...) shorter than the numbers it
      must hold or than every other record of its kind in the file;
    - its last ATOM/HETATM record stops before its coordinates end (column 54);
    - its last MODEL is never closed (no ENDMDL or END after it);
    - it closes its chains with TER records but nothing (TER, END, ENDMDL) follows its last
      ATOM record.

    ``heads``: (starts [lines] int64, the offset of every line; heads [lines] uint64, its
    first 8 bytes, little-endian), as the columnar reader reads them, finds the records
    without searching the text (a search for a record a file lacks reads all of it);
    without it the text is searched.
    """
    if not text.endswith(b"\n"):
        start = text.rfind(b"\n") + 1
        last = text[start:].rstrip(b"\r")
        if last.strip():
            _check_unterminated(path, text, start, last)
    lines = _Lines(text, heads)
    atom = max(lines.last(b"ATOM  "), lines.last(b"HETATM"))
    if atom >= 0:
        end = text.find(b"\n", atom)
        line = text[atom : end if end >= 0 else len(text)].rstrip(b"\r")
        if len(line) < _NUMERIC_RECORDS[b"ATOM"]:
            raise _truncated(
                path, "the last ATOM/HETATM record stops before its coordinates", line_number(text, atom)
            )
    model = lines.last(b"MODEL ")
    if model >= 0 and not lines.after(model, b"END"):
        raise _truncated(path, "the last MODEL is never closed by ENDMDL or END", line_number(text, model))
    last_atom = lines.last(b"ATOM  ")
    if last_atom >= 0 and lines.first(b"TER") >= 0:
        if not lines.after(last_atom, b"TER") and not lines.after(last_atom, b"END"):
            raise _truncated(
                path,
                "the file closes its chains with TER records, but no TER, ENDMDL or END follows "
                "its last ATOM record",
                line_number(text, last_atom),
            )


class _Lines:
    """Lines starting with a record name: by the line heads when given, else by searching
    the text. Offsets are those of the line's first byte; -1 when there is none."""

    def __init__(self, text: bytes, heads: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.text = text
        self.heads = heads

    def _starts(self, record: bytes) -> np.ndarray:
        """Offsets of the lines starting with ``record`` (heads given)."""
        assert self.heads is not None
        starts, heads = self.heads
        mask = word((1 << (8 * len(record))) - 1)
        return starts[(heads & mask) == word(int.from_bytes(record, "little"))]

    def last(self, record: bytes) -> int:
        if self.heads is None:
            return _record_start(self.text, record)
        found = self._starts(record)
        return int(found[-1]) if len(found) else -1

    def first(self, record: bytes) -> int:
        if self.heads is None:
            return _record_start(self.text, record, last=False)
        found = self._starts(record)
        return int(found[0]) if len(found) else -1

    def after(self, offset: int, record: bytes) -> bool:
        """Whether a line after the one starting at ``offset`` starts with ``record``."""
        if self.heads is None:
            return self.text.find(b"\n" + record, offset) >= 0
        return self.last(record) > offset


def _check_unterminated(path: Path, text: bytes, start: int, line: bytes) -> None:
    """The last line of a file without a final line break: a complete record or a cut one?"""
    name = line[:6].rstrip()
    number = line_number(text, start)
    if name not in _PDB_RECORDS:
        raise _truncated(path, f"the last line ends mid-record ({line[:12].decode('latin-1')!r}...)", number)
    needed = _NUMERIC_RECORDS.get(name)
    if needed is None:
        return
    if len(line) < needed:
        raise _truncated(path, f"the last {name.decode()} record stops before its numbers end", number)
    kind = b"\n" + line[:6]
    lengths = []
    at = text.find(kind)
    while 0 <= at < start - 1:
        end = text.find(b"\n", at + 1)
        lengths.append(len(text[at + 1 : end].rstrip(b"\r")))
        at = text.find(kind, end)
    if text.startswith(line[:6]) and start > 0:
        lengths.append(len(text[: text.find(b"\n")].rstrip(b"\r")))
    if lengths and len(line) < min(lengths):
        raise _truncated(
            path,
            f"the last {name.decode()} record is shorter than every other one and has no line break",
            number,
        )


def check_cif_complete(path: Path, text: bytes) -> None:
    """Refuse an mmCIF file that shows it was cut short, or that Bio.PDB's tokenizer refuses
    before reading anything: one not opened by a ``data_`` block header, one whose last line
    (not a comment) has no line break (every mmCIF writer ends its lines), one with a
    ``;`` text field that is never closed. The ``_atom_site`` loop itself is checked as it
    is read (:func:`protsteps.structure._cif.atom_site_columns`)."""
    _check_data_header(path, text)
    if not text.endswith(b"\n"):
        start = text.rfind(b"\n") + 1
        last = text[start:].strip()
        if last and not last.startswith(b"#"):
            raise _truncated(
                path, "the last line ends without a line break, mid-value", line_number(text, start)
            )
    # text.count(b"\n;") by numpy: a count of a two-byte string reads the text far slower
    buffer = np.frombuffer(text, dtype=np.uint8)
    semicolons = np.flatnonzero(buffer[1:] == _SEMICOLON)  # each one byte before a ';'
    fields = int(np.count_nonzero(buffer[semicolons] == _LINE_FEED)) + text.startswith(b";")
    if fields % 2:
        opened = text.rfind(b"\n;") + 1
        raise _truncated(path, "a ';' text field is never closed", line_number(text, opened))


def _check_data_header(path: Path, text: bytes) -> None:
    start = 0
    while start < len(text):
        end = text.find(b"\n", start)
        end = len(text) if end < 0 else end
        line = text[start:end]
        if line.strip() and not line.startswith(b"#"):
            if line.strip().startswith(b"data_"):
                return
            break
        start = end + 1
    raise StructureError(
        f"{path}: not an mmCIF file: it does not open with a data_ block header (line "
        f"{line_number(text, start)}); check the file or its .cif name"
    )
