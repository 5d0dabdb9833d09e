"""The fast reader: whole columns at a time instead of an object per atom.

PDB files are fixed-column text, so each field is read at its columns from every line
start (the backbone atoms' lines copied into one byte array for the residue fields); mmCIF
files are read from the ``_atom_site`` loop's tokens (:mod:`._cif`). Both then resolve
alternate locations and group atoms into residues with sorting and ``np.unique`` instead of
a loop. They reproduce Bio.PDB's reading (first model,
highest-occupancy alternate location, first appearance order); a test checks that on every
shared structure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import StructureError
from ._chain import BACKBONE_ATOMS, ResidueRecords
from ._cif import AtomSiteTokens, atom_site_columns, atom_site_tokens
from ._complete import check_pdb_complete
from ._fixed import blank_before, byte_rows, byte_words, field_words, fixed_integer, fixed_point, word
from ._io import Format

__all__ = ["read_records_columnar"]

_SLOT = {name: slot for slot, name in enumerate(BACKBONE_ATOMS)}
_SLOT_BYTES = {name.encode(): slot for name, slot in _SLOT.items()}
_WATER_NAMES = (b"HOH", b"WAT")


def _one_of(values: np.ndarray, choices: tuple[bytes, ...]) -> np.ndarray:
    """``np.isin(values, choices)`` for a few choices: one comparison each (``np.isin``
    sorts, tens of microseconds on a small file's residues)."""
    found = values == choices[0]
    for choice in choices[1:]:
        found |= values == choice
    return found


def read_records_columnar(path: Path, text: bytes, fmt: Format) -> ResidueRecords:
    """Residue records of the first model; same contract as the Bio.PDB reader. A PDB file
    is checked for being whole (:func:`.check_pdb_complete`) here, on the reader's own line
    index; an mmCIF file must have been checked before."""
    if fmt == "pdb":
        return _pdb_records(path, text)
    tokens = atom_site_tokens(text)
    if tokens is not None:
        return _cif_records(path, _LoopColumns(path, tokens=tokens))
    columns = atom_site_columns(path, text)
    if columns is None:
        columns = _cif_atom_site_full(path, text)
    return _cif_records(path, _LoopColumns(path, lists=columns))


# ---------------------------------------------------------------------------- PDB


def _record_code(name: bytes) -> int:
    """A six-column record name as the integer its bytes make (little-endian)."""
    return int.from_bytes(name, "little")


_ATOM, _HETATM = _record_code(b"ATOM  "), _record_code(b"HETATM")
_MODEL, _ENDMDL = _record_code(b"MODEL "), _record_code(b"ENDMDL")
_END, _CONECT = _record_code(b"END   "), _record_code(b"CONECT")
_SIX_BYTES = word((1 << 48) - 1)
# A four-column atom name field that strips to a backbone atom name, and its slot; the field
# is compared as the little-endian uint32 of its bytes.
_NAME_FIELDS = {
    field.encode(): slot
    for name, slot in _SLOT.items()
    for field in {name.rjust(k).ljust(4) for k in range(len(name), 5)}
}
_NAME_CODES = np.array([int.from_bytes(f, "little") for f in _NAME_FIELDS], dtype=np.uint32)
_NAME_SORTER = np.argsort(_NAME_CODES)
_NAME_SORTED = _NAME_CODES[_NAME_SORTER]
_NAME_SLOTS = np.array(list(_NAME_FIELDS.values()), dtype=np.int8)[_NAME_SORTER]
_SPACE = 32
#: where the x, y and z fields start (0-based columns 30, 38, 46; eight columns each) and end
_XYZ_COLUMNS = np.array([30, 38, 46])
_XYZ_END = 54
_U32 = word(32)
#: the columns of an ATOM/HETATM record the reader uses (through the occupancy)
_ATOM_WIDTH = 60
#: zero bytes after the text, so that a window of this many columns fits at every line start
_PADDING = 80


def _columns(
    buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray, first: int, width: int, fill: int
) -> np.ndarray:
    """[lines, width] uint8: columns first..first+width of each line, ``fill`` past its end."""
    columns = np.arange(first, first + width)
    index = starts[:, None] + columns[None, :]
    if len(lengths) and int(lengths.min()) >= first + width:
        return buffer[index]  # every line is long enough: nothing to fill
    block = buffer[np.minimum(index, len(buffer) - 1)]
    block[columns[None, :] >= lengths[:, None]] = fill
    return np.ascontiguousarray(block)


def _line_rows(padded: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """[lines, width] uint8: the first ``width`` columns of each line, blank past its end.
    ``padded`` is the text followed by ``width`` zero bytes, so that every window fits."""
    rows = byte_rows(padded, width)[starts]  # one contiguous copy, row by row
    short = np.flatnonzero(lengths < width)
    if len(short):
        past = np.arange(width)[None, :] >= lengths[short, None]
        rows[short] = np.where(past, np.uint8(_SPACE), rows[short])
    return rows


def _pdb_records(path: Path, text: bytes) -> ResidueRecords:
    """Every line is located with one pass of numpy over the bytes; the record name of every
    line is compared as an integer; the fields every atom line is checked for (name,
    coordinates, residue number) are read in place as the 8 bytes at their columns, and
    only the backbone atoms' lines are copied into a [lines, 60] byte array whose columns
    are the record's other fields. Numbers are read by :mod:`._fixed` when written in the
    standard layout, else by numpy's conversion."""
    buffer = np.frombuffer(text, dtype=np.uint8)
    breaks = np.flatnonzero(buffer == 10)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buffer)]))
    if len(buffer) and ends[-1] == starts[-1]:
        starts, ends = starts[:-1], ends[:-1]
    if b"\r" in text:
        carriage = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 13)
        ends = ends - carriage
    lengths = ends - starts
    padded = np.concatenate((buffer, np.zeros(_PADDING, dtype=np.uint8)))
    # Record names as Bio.PDB compares them: exactly six columns, so "END" alone is not END
    # (the byte after a shorter line is a line break or padding, which no name holds).
    heads = byte_words(padded)[starts]
    check_pdb_complete(path, text, (starts, heads))
    record = heads & _SIX_BYTES
    is_atom = (record == _ATOM) | (record == _HETATM)
    atom_lines = np.flatnonzero(is_atom)
    if len(atom_lines) == 0:
        raise StructureError(f"{path}: no ATOM or HETATM records")
    # The first model, following Bio.PDB: reading starts at the first ATOM/HETATM (or a
    # MODEL before it) and stops at END/CONECT, or at MODEL/ENDMDL after the first atom.
    first_atom = int(atom_lines[0])
    model_lines = np.flatnonzero((record == _MODEL) | (record == _ENDMDL))
    start = min(first_atom, int(model_lines[0])) if len(model_lines) else first_atom
    stops = np.flatnonzero((record == _END) | (record == _CONECT))
    stops = stops[stops >= start]
    later_models = model_lines[model_lines > first_atom]
    end = min([len(record), *stops[:1].tolist(), *later_models[:1].tolist()])
    # Bio.PDB parses the numbers of every model's records up to END/CONECT and refuses the
    # file if one does not parse; so do we, reading the first model's atoms from them.
    checked = atom_lines[atom_lines < (stops[0] if len(stops) else len(record))]
    # Fields are read as the 8 bytes at their columns from every line start, in place. Those
    # of a line that ends before them would be bytes of the next line: when any atom line is
    # shorter than the coordinates, the columns go to the general conversion, which reads
    # each line blanked past its end (and refuses it, as Bio.PDB does). Every name and
    # residue number is then within its line.
    words = byte_words(padded)
    at = starts[checked]
    whole = bool(len(checked) == 0 or int(lengths[checked].min()) >= _XYZ_END)
    # The backbone atoms of the first model (its atom lines come first): only their numbers
    # are read, once every atom's numbers are checked.
    first_model = int(np.searchsorted(checked, end))
    names = words[at[:first_model] + 12].astype(np.uint32)  # columns 13-16, by truncation
    found = np.minimum(np.searchsorted(_NAME_SORTED, names), len(_NAME_SORTED) - 1)
    match = np.flatnonzero(_NAME_SORTED[found] == names)
    # [3, atoms]: gathered a coordinate at a time (a [atoms, 3] index broadcasts slowly)
    xyz = fixed_point(words[_XYZ_COLUMNS[:, None] + at], 3, (slice(None), match)) if whole else None
    if xyz is None:
        xyz = _pdb_numbers(
            path, buffer, starts, lengths, checked, 30, 8, 3, "invalid or missing coordinates"
        )[match]
    else:
        xyz = xyz.T
    resseq = _residue_numbers(words[at + 18], match)
    if resseq is None:
        resseq = _pdb_residue_numbers(path, buffer, starts, lengths, checked)[match]
    resseq = resseq.reshape(-1)
    _check_extra_numbers(path, buffer, starts, lengths, words, record, start, stops)
    if len(match) == 0:
        return _empty_records()
    lines = checked[match]
    table = _line_rows(padded, starts[lines], lengths[lines], _ATOM_WIDTH)
    slots = _NAME_SLOTS[found[match]]
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    hetatm = record[checked[match]] == _HETATM
    # Atoms of one residue are neighbours in the file: compare each with the one before
    # (residue name, chain, number, insertion code and record) and read the residue fields
    # once per run of atoms.
    identity = table[:, 17:27]
    new_run = np.ones(len(table), dtype=bool)
    new_run[1:] = (identity[1:] != identity[:-1]).any(1) | (hetatm[1:] != hetatm[:-1])
    run_first = np.flatnonzero(new_run)
    runs = table[run_first]
    resname = np.char.strip(np.ascontiguousarray(runs[:, 17:20]).view("S3").ravel())
    run_het = hetatm[run_first]
    water = run_het & _one_of(resname, _WATER_NAMES)
    kind = np.where(water, 2, run_het).astype(np.int8)
    run_resseq = resseq[run_first]
    return _group(
        run_of_atom=np.cumsum(new_run) - 1,
        run_first=run_first,
        chain=np.ascontiguousarray(runs[:, 21]).view("S1"),
        kind=kind,
        resname=resname,
        resseq=run_resseq,
        icode=np.ascontiguousarray(runs[:, 26]).view("S1"),
        slot=slots,
        occupancy=lambda: _pdb_occupancy(table),
        xyz=xyz,
        altloc_blank=table[:, 16] == _SPACE,
        key=_pdb_residue_keys(runs, kind, resname, run_resseq),
    )


def _residue_numbers(words: np.ndarray, match: np.ndarray) -> np.ndarray | None:
    """:func:`.fixed_integer` of columns 23-26 (the residue number) for the ``match`` lines,
    with every line checked; ``None`` where a field has another layout. ``words``: each
    line's bytes from column 19 as one little-endian word, the field its last four bytes.
    The atoms of a residue repeat the field: each run of equal fields is checked and read
    once."""
    field = words >> _U32
    new = np.empty(len(field), dtype=bool)
    new[:1] = True
    np.not_equal(field[1:], field[:-1], out=new[1:])
    heads = np.flatnonzero(new)
    values = fixed_integer(blank_before(words[heads], 4))
    if values is None:
        return None
    return values.reshape(-1)[(np.cumsum(new) - 1)[match]]


def _pdb_occupancy(table: np.ndarray) -> np.ndarray:
    """[atoms] float64, columns 55-60; 1 where they do not hold a number."""
    occupancy = fixed_point(field_words(table, 60, 1, 6), 2)
    if occupancy is None:
        occupancy = _floats_or(np.ascontiguousarray(table[:, 54:60]).view("S6").reshape(-1), 1.0)
    return occupancy.reshape(-1)


def _pdb_residue_keys(
    runs: np.ndarray, kind: np.ndarray, resname: np.ndarray, resseq: np.ndarray
) -> np.ndarray | None:
    """:func:`_residue_keys` from the bytes of PDB records: chain and insertion code are one
    byte each, a HETATM residue's name three; ``None`` when the residue numbers span more
    than 2**20 (then the general packing decides)."""
    low = int(resseq.min()) if len(resseq) else 0
    numbers = int(resseq.max()) - low + 1 if len(resseq) else 1
    if numbers > 1 << 20:
        return None
    name = np.ascontiguousarray(resname.astype("S3")).view(np.uint8).reshape(-1, 3).astype(np.int64)
    het_name = np.where(kind == 1, name[:, 0] | name[:, 1] << 8 | name[:, 2] << 16, 0)
    key = (runs[:, 21].astype(np.int64) * 3 + kind) << 24 | het_name
    return (key * numbers + (resseq - low)) << 8 | runs[:, 26]


def _floats_or(column: np.ndarray, default: float) -> np.ndarray:
    try:
        return column.astype(np.float64)
    except ValueError:
        out = np.empty(len(column), dtype=np.float64)
        for i, raw in enumerate(column.tolist()):
            try:
                out[i] = float(raw)
            except ValueError:
                out[i] = default
        return out


# Records with numbers Bio.PDB parses besides ATOM/HETATM, and its column slices for them.
_EXTRA_NUMBERS = {
    b"ANISOU": ((28, 35), (35, 42), (43, 49), (49, 56), (56, 63), (63, 70)),
    b"SIGUIJ": ((28, 35), (35, 42), (42, 49), (49, 56), (56, 63), (63, 70)),
    b"SIGATM": ((30, 38), (38, 46), (46, 54), (54, 60), (60, 66)),
}


def _pdb_numbers(
    path: Path,
    buffer: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    lines: np.ndarray,
    first: int,
    width: int,
    fields: int,
    what: str,
) -> np.ndarray:
    """[lines, fields] float64: ``fields`` adjacent ``width``-column numbers from column
    ``first``; one that does not parse is a :class:`StructureError` naming its line."""
    block = _columns(buffer, starts[lines], lengths[lines], first, width * fields, _SPACE)
    values = np.ascontiguousarray(block).view(f"S{width}")
    try:
        return values.astype(np.float64).reshape(len(lines), fields)
    except ValueError:
        for row, line in enumerate(values.tolist()):
            for value in line:
                try:
                    float(value)
                except ValueError:
                    raise StructureError(
                        f"{path}: {what} on line {int(lines[row]) + 1}; re-download or repair the file"
                    ) from None
        raise


def _pdb_residue_numbers(
    path: Path, buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray, lines: np.ndarray
) -> np.ndarray:
    """[lines] int64: columns 23-26, read as Bio.PDB reads them (the first word)."""
    field = _columns(buffer, starts[lines], lengths[lines], 22, 4, _SPACE).view("S4").ravel()
    try:
        return field.astype(np.int64)
    except ValueError:
        out = np.empty(len(field), dtype=np.int64)
        for row, raw in enumerate(field.tolist()):
            try:
                out[row] = int(raw.split()[0])
            except (ValueError, IndexError):
                raise StructureError(
                    f"{path}: invalid residue number on line {int(lines[row]) + 1}; re-download or repair the file"
                ) from None
        return out


def _check_extra_numbers(
    path: Path,
    buffer: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    words: np.ndarray,
    record: np.ndarray,
    start: int,
    stops: np.ndarray,
) -> None:
    """ANISOU, SIGATM and SIGUIJ numbers parse where Bio.PDB reads them (up to END/CONECT);
    ``words``: :func:`.byte_words` of the padded text."""
    stop = int(stops[0]) if len(stops) else len(record)
    for name, slices in _EXTRA_NUMBERS.items():
        lines = np.flatnonzero(record == _record_code(name))
        lines = lines[(lines >= start) & (lines < stop)]
        if not len(lines):
            continue
        at = starts[lines]
        shortest = int(lengths[lines].min())
        for first, end in slices:
            # Each field as the 8 bytes that end where it ends, read in place, the bytes
            # before it blanked; when a line ends before the field, the general conversion
            # reads the lines blanked past their ends instead. (ANISOU and SIGUIJ write
            # integers: read as such they need no conversion.)
            field = blank_before(words[at + (end - 8)], end - first)
            if shortest < end or fixed_integer(field) is None:
                _pdb_numbers(
                    path,
                    buffer,
                    starts,
                    lengths,
                    lines,
                    first,
                    end - first,
                    1,
                    f"invalid {name.decode()} values",
                )


# ---------------------------------------------------------------------------- residues


def _empty_records() -> ResidueRecords:
    return ResidueRecords(
        chain_ids=[],
        residue_names=[],
        hetero=np.zeros(0, dtype=bool),
        residue_numbers=np.zeros(0, dtype=np.int64),
        insertion_codes=[],
        backbone=np.zeros((0, 4, 3), dtype=np.float32),
        backbone_mask=np.zeros((0, 4), dtype=bool),
    )


def _group(
    run_of_atom: np.ndarray,
    run_first: np.ndarray,
    chain: np.ndarray,
    kind: np.ndarray,
    resname: np.ndarray,
    resseq: np.ndarray,
    icode: np.ndarray,
    slot: np.ndarray,
    occupancy: Callable[[], np.ndarray],
    xyz: np.ndarray,
    altloc_blank: np.ndarray,
    key: np.ndarray | None = None,
) -> ResidueRecords:
    """Atoms -> residues, in order of first appearance.

    Atoms come in runs (consecutive atoms with the same residue fields): ``run_of_atom``
    [A] says which run each atom is in, ``run_first`` [R] is each run's first atom, and
    ``chain``, ``kind``, ``resname``, ``resseq``, ``icode`` [R] are each run's residue fields.
    A residue is identified as Bio.PDB does: chain, hetero flag (``kind``: ATOM 0, HETATM 1,
    water 2; HETATM residues also by name), number and insertion code, so that two runs with
    one identity (a residue continued later in the file) are one residue. Per residue and
    backbone atom the highest-occupancy record wins, the earlier one on a tie; ``occupancy``
    gives [A] float64 when that choice is to be made (only alternate locations or repeated
    atoms need it). ``key`` [R] int64, if given, is the runs' residue identity already
    packed (equal exactly for runs of one residue).
    """
    count = len(slot)
    if key is None:
        key = _residue_keys(chain, kind, resname, resseq, icode)
    if bool((key[1:] > key[:-1]).all()):
        # Keys already increasing (chains, then residue numbers, in order: the usual file):
        # every run is a residue of its own, numbered as it comes.
        first_run = np.arange(len(key))
        residue = run_of_atom
    else:
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        # np.unique sorts by key; renumber residues by where they first appear in the file.
        rank = np.empty(len(first), dtype=np.int64)
        order = np.argsort(first, kind="stable")
        rank[order] = np.arange(len(first))
        residue_of_run = rank[inverse.reshape(-1)]
        first_run = first[order]
        residue = residue_of_run[run_of_atom]

    residues = len(first_run)
    atom_slot = residue * 4 + slot
    backbone = np.zeros((residues, 4, 3), dtype=np.float32)
    mask = np.zeros((residues, 4), dtype=bool)
    name_run = first_run.copy()
    if np.bincount(atom_slot, minlength=4 * residues).max(initial=0) <= 1:
        # no alternate locations, no duplicates: nothing to choose, every atom is placed
        backbone.reshape(-1, 3)[atom_slot] = xyz
        mask.reshape(-1)[atom_slot] = True
        chosen_ca = np.flatnonzero(slot == _SLOT["CA"])
        name_run[residue[chosen_ca]] = run_of_atom[chosen_ca]
        return _residue_records(chain, kind, resname, resseq, icode, first_run, name_run, backbone, mask)
    # Bio.PDB lets an altloc record displace a blank-altloc one of equal occupancy; every
    # other tie keeps the earlier record.
    tie_order = np.where(altloc_blank, 1, 0)
    best = np.lexsort((np.arange(count), tie_order, -occupancy(), atom_slot))
    chosen = best[np.r_[True, atom_slot[best][1:] != atom_slot[best][:-1]]]
    backbone[residue[chosen], slot[chosen]] = xyz[chosen]
    mask[residue[chosen], slot[chosen]] = True
    # A point mutation (two residue names at one position, as alternate locations) is read
    # as the residue whose CA was chosen.
    chosen_ca = chosen[slot[chosen] == _SLOT["CA"]]
    name_run[residue[chosen_ca]] = run_of_atom[chosen_ca]
    return _residue_records(chain, kind, resname, resseq, icode, first_run, name_run, backbone, mask)


def _residue_records(
    chain: np.ndarray,
    kind: np.ndarray,
    resname: np.ndarray,
    resseq: np.ndarray,
    icode: np.ndarray,
    first_run: np.ndarray,
    name_run: np.ndarray,
    backbone: np.ndarray,
    mask: np.ndarray,
) -> ResidueRecords:
    return ResidueRecords(
        chain_ids=_text(chain[first_run]),
        residue_names=_text(resname[name_run]),
        hetero=kind[first_run] != 0,
        residue_numbers=resseq[first_run],
        insertion_codes=_text(icode[first_run]),
        backbone=backbone,
        backbone_mask=mask,
    )


def _text(values: np.ndarray) -> np.ndarray:
    """A bytes column as text (latin-1, as the reference reader decodes files)."""
    values = np.ascontiguousarray(values.reshape(-1))
    size = values.dtype.itemsize
    codes = values.view(np.uint8)
    if size and (not len(codes) or int(codes.max()) < 128):
        # ASCII, by far the common case: each byte is its own code point, so widening the
        # bytes to UCS-4 gives what astype(str) gives, without decoding value by value
        return codes.astype("<u4").view(f"<U{size}")
    try:
        return values.astype(str)
    except UnicodeDecodeError:
        return np.char.decode(values, "latin-1")


def _runs(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive rows equal in every column: (run of each row [A], first row of
    each run [R])."""
    new_run = np.ones(len(columns[0]), dtype=bool)
    for column in columns:
        new_run[1:] |= column[1:] != column[:-1]
    return np.cumsum(new_run) - 1, np.flatnonzero(new_run)


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Small integer codes of a string column (and how many distinct values it has)."""
    if values.dtype.itemsize <= 8:
        # Unique integers are much faster than unique strings: pad to 8 bytes and reinterpret.
        values = np.ascontiguousarray(values.astype("S8")).view(np.uint64)
    unique, codes = np.unique(values, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), len(unique)


def _residue_keys(
    chain: np.ndarray, kind: np.ndarray, resname: np.ndarray, resseq: np.ndarray, icode: np.ndarray
) -> np.ndarray:
    """One integer per atom naming its residue: chain, hetero flag (ATOM, HETATM, water),
    HETATM residue name, number and insertion code, packed by mixed radix."""
    chain_code, chains = _codes(chain)
    het_code, hets = _codes(np.where(kind == 1, resname, resname.dtype.type(b"")))
    icode_code, icodes = _codes(icode)
    low, high = (int(resseq.min()), int(resseq.max())) if len(resseq) else (0, 0)
    if high - low < 2**31:
        number, numbers = resseq.astype(np.int64) - low, high - low + 1
    else:
        # numbers far apart (an mmCIF auth_seq_id may be any integer): their ranks, which keep
        # the order, instead of differences that could overflow int64
        distinct, number = np.unique(resseq, return_inverse=True)
        number, numbers = number.reshape(-1).astype(np.int64), len(distinct)
    codes = ((kind.astype(np.int64), 3), (het_code, hets), (number, numbers), (icode_code, icodes))
    if float(chains) * 3 * hets * numbers * icodes >= 2**62:
        # too many distinct values to pack in 63 bits: the rows' ranks in the same
        # (lexicographic, i.e. mixed-radix) order
        stacked = np.stack([chain_code, *(code for code, _ in codes)], axis=1)
        _, key = np.unique(stacked, axis=0, return_inverse=True)
        return key.reshape(-1).astype(np.int64)
    key = chain_code
    for code, size in codes:
        key = key * size + code
    return key


# ---------------------------------------------------------------------------- mmCIF

# The columns Bio.PDB's MMCIFParser cannot do without (and the residue number: auth_seq_id,
# else label_seq_id); a loop lacking one is refused by both readers.
_CIF_REQUIRED = (
    "id",
    "group_PDB",
    "label_atom_id",
    "label_alt_id",
    "label_comp_id",
    "auth_asym_id",
    "pdbx_PDB_ins_code",
    "Cartn_x",
    "Cartn_y",
    "Cartn_z",
    "occupancy",
    "B_iso_or_equiv",
)
_UNASSIGNED = (b".", b"?")


def _cif_atom_site_full(path: Path, text: bytes) -> dict[str, list[bytes]]:
    """The ``_atom_site`` items by Bio.PDB's whole-file tokenizer, for layouts the loop
    reader does not take (no loop, tags and values interleaved)."""
    import io

    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    try:
        parsed = MMCIF2Dict(io.StringIO(text.decode("latin-1")))
    except Exception as exc:
        raise StructureError(f"{path}: not a readable mmCIF file ({type(exc).__name__}: {exc})") from None
    return {
        key[len("_atom_site.") :]: [v.encode("latin-1") for v in values]
        for key, values in parsed.items()
        if key.startswith("_atom_site.")
    }


#: loops of fewer rows are read by numpy's conversion: the fixed-column readers' hundred-odd
#: operations cost more than converting a few hundred values one by one (the two take about
#: as long at 500 rows; benchmarks/featurize.py's files)
_FIXED_FROM_ROWS = 512


def _numbers(path: Path, values: np.ndarray, dtype: type, what: str) -> np.ndarray:
    try:
        return values.astype(dtype)
    except (ValueError, OverflowError):
        raise StructureError(f"{path}: {what} in _atom_site; re-download or repair the file") from None


class _LoopColumns:
    """The ``_atom_site`` columns, from one list of values per tag (the exact tokenizer) or
    from token offsets (the fast path, read a column at a time without a bytes object per
    value)."""

    def __init__(
        self, path: Path, lists: dict[str, list[bytes]] | None = None, tokens: AtomSiteTokens | None = None
    ) -> None:
        self.path, self.lists, self.tokens = path, lists, tokens
        self.tags = set(tokens.tags if tokens is not None else lists or ())
        self._strings: dict[str, np.ndarray] = {}

    def lengths(self) -> set[int]:
        if self.tokens is not None:
            return {self.tokens.rows}
        return {len(values) for values in (self.lists or {}).values()}

    def strings(self, tag: str) -> np.ndarray:
        """[rows] numpy bytes values."""
        if tag not in self._strings:
            if self.tokens is not None:
                self._strings[tag] = self.tokens.strings(tag)
            else:
                self._strings[tag] = np.asarray((self.lists or {})[tag], dtype=bytes)
        return self._strings[tag]

    def some_strings(self, tag: str, rows: np.ndarray) -> np.ndarray:
        """The values of ``rows`` only (read only for them where that is possible)."""
        if self.tokens is not None and tag not in self._strings:
            return self.tokens.strings(tag, rows)
        return self.strings(tag)[rows]

    def numbers(self, tag: str, dtype: type, what: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The values of ``rows`` (default all) as numbers; one that does not parse is a
        :class:`StructureError`. In a loop of at least :data:`_FIXED_FROM_ROWS` rows, values
        written alike (digits, one sign, as many decimals as the first value) are read by
        :mod:`._fixed`; other values, and those of smaller loops, by numpy's conversion."""
        fixed = self.tokens is not None and self.tokens.rows >= _FIXED_FROM_ROWS
        values = self._fixed(tag, dtype) if fixed else None
        if values is not None:
            return values if rows is None else values[rows]
        strings = self.strings(tag)
        return _numbers(self.path, strings if rows is None else strings[rows], dtype, what)

    def _fixed(self, tag: str, dtype: type) -> np.ndarray | None:
        """The fixed-column reader on the right-aligned values (the common case: at most 8
        characters, as many decimals as the first value), else, for floats, the reader of
        any decimal layout; ``None`` when neither reads the column."""
        assert self.tokens is not None
        words = self.tokens.words(tag)
        if dtype is np.int64:
            return None if words is None else fixed_integer(words)
        if words is not None:
            starts, ends = self.tokens.column(tag)
            first = self.tokens.block[starts[0] : ends[0]].tobytes()
            point = first.find(b".")
            if 0 <= point and len(first) - 1 - point <= 6:
                values = fixed_point(words, len(first) - 1 - point)
                if values is not None:
                    return values
        return self.tokens.decimals(tag)


def _cif_records(path: Path, columns: _LoopColumns) -> ResidueRecords:
    """Every row is checked as Bio.PDB's MMCIFParser checks it (numbers that must parse, in
    every model), then the backbone atoms of the first model are grouped into residues."""
    seq_tag = "auth_seq_id" if "auth_seq_id" in columns.tags else "label_seq_id"
    missing = [tag for tag in (*_CIF_REQUIRED, seq_tag) if tag not in columns.tags]
    if missing:
        raise StructureError(
            f"{path}: the _atom_site loop lacks {', '.join('_atom_site.' + m for m in missing)}"
        )
    counts = columns.lengths()
    if len(counts) > 1:
        raise StructureError(f"{path}: truncated or malformed _atom_site loop (its columns differ in length)")
    count = counts.pop()
    if count == 0:
        raise StructureError(f"{path}: no atoms in _atom_site")

    full = columns.strings
    xyz = np.stack(
        [
            columns.numbers(tag, np.float64, "invalid or missing coordinates")
            for tag in ("Cartn_x", "Cartn_y", "Cartn_z")
        ],
        axis=1,
    )
    seq = full(seq_tag)
    numbered = seq != b"."  # Bio.PDB skips a row without a residue number
    resseq = np.zeros(count, dtype=np.int64)
    resseq[numbered] = columns.numbers(seq_tag, np.int64, "invalid residue number", numbered)
    occupancy = np.ones(count, dtype=np.float64)
    occupancy[numbered] = columns.numbers("occupancy", np.float64, "invalid or missing occupancy", numbered)
    columns.numbers("B_iso_or_equiv", np.float64, "invalid or missing B factor", numbered)
    rows = np.arange(count)
    if "pdbx_PDB_model_num" in columns.tags:
        model = columns.numbers("pdbx_PDB_model_num", np.int64, "invalid model number")
        # Bio.PDB opens a new model whenever the number changes; keep the first run.
        changes = np.flatnonzero(model[1:] != model[:-1])
        if len(changes):
            rows = rows[: changes[0] + 1]
    names = columns.some_strings("label_atom_id", rows)
    slot_of = np.full(len(rows), -1, dtype=np.int8)
    for name, slot in _SLOT_BYTES.items():
        slot_of[names == name] = slot
    take = rows[(slot_of >= 0) & numbered[rows]]
    if len(take) == 0:
        return _empty_records()

    def column(tag: str) -> np.ndarray:
        return columns.some_strings(tag, take)

    altloc = column("label_alt_id")
    icode = column("pdbx_PDB_ins_code")
    resname = column("label_comp_id")
    hetatm = column("group_PDB") == b"HETATM"
    chain = column("auth_asym_id")
    resseq = resseq[take]
    run_of_atom, run_first = _runs(chain, resseq, icode, resname, hetatm)
    icode = icode[run_first]
    icode = np.where(_one_of(icode, _UNASSIGNED), b" ", icode)
    resname = resname[run_first]
    run_het = hetatm[run_first]
    water = run_het & _one_of(resname, _WATER_NAMES)
    return _group(
        run_of_atom=run_of_atom,
        run_first=run_first,
        chain=chain[run_first],
        kind=np.where(water, 2, run_het).astype(np.int8),
        resname=resname,
        resseq=resseq[run_first],
        icode=icode,
        slot=slot_of[take],  # rows is 0, 1, 2, ...: row numbers index it directly
        occupancy=lambda: occupancy[take],
        xyz=xyz[take].astype(np.float32),
        altloc_blank=_one_of(altloc, _UNASSIGNED),
    )
