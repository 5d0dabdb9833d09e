"""BinaryCIF: the ``_atom_site`` category of a ``.bcif`` file as columns.

BinaryCIF (the format of RCSB's and AlphaFold DB's model servers, and of Mol*) is mmCIF's
data model in MessagePack: data blocks of categories of columns, each column a byte string
with the chain of encodings that made it (``ByteArray``, ``FixedPoint``,
``IntervalQuantization``, ``RunLength``, ``Delta``, ``IntegerPacking``, ``StringArray``),
undone here last first with numpy, a whole column at a time, and an optional mask (0: a
value, 1: ``.``, 2: ``?``). Specification: https://github.com/molstar/BinaryCIF.

The decoded columns are read by the same code as an mmCIF file's ``_atom_site`` loop
(:func:`protsteps.structure._columnar._cif_records`), so a structure gives the same chains
whichever of the two it is stored in: numbers that are numbers in the file are used as they
are (fixed-point coordinates are divided in float64, as the text's decimals are parsed),
and columns are turned into text only where the mmCIF reading compares text (names, codes,
``.`` for a missing residue number). :func:`to_mmcif` writes the category as an mmCIF loop,
which is how the reference reader (Bio.PDB's ``MMCIFParser``) reads a BinaryCIF file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StructureError
from ._chain import ResidueRecords
from ._columnar import _cif_records, _LoopColumns

__all__ = ["is_bcif", "atom_site_arrays", "read_records_bcif", "to_mmcif", "DecodedColumn"]

# ByteArray type codes (little-endian)
_TYPES: dict[int, str] = {1: "<i1", 2: "<i2", 3: "<i4", 4: "<u1", 5: "<u2", 6: "<u4", 32: "<f4", 33: "<f8"}


def is_bcif(data: bytes) -> bool:
    """Whether bytes look like a BinaryCIF file: a MessagePack map whose keys include
    ``dataBlocks`` near the start."""
    return _is_map(data) and b"dataBlocks" in data[:256]


def _is_map(data: bytes) -> bool:
    return bool(data) and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF))


class _Bad(Exception):
    """A column that does not decode (the message says why)."""


class DecodedColumn:
    """One decoded column: ``values`` (a numeric array, or a bytes array of UTF-8 text) and
    ``mask`` (``None`` or uint8 per row: 0 a value, 1 ``.``, 2 ``?``)."""

    __slots__ = ("mask", "values")

    def __init__(self, values: np.ndarray, mask: np.ndarray | None) -> None:
        self.values, self.mask = values, mask

    def __len__(self) -> int:
        return len(self.values)

    @property
    def numeric(self) -> bool:
        return self.values.dtype.kind in "iuf"

    def strings(self) -> np.ndarray:
        """[rows] bytes values as an mmCIF file would hold them (``.``/``?`` where masked;
        an empty string is written ``.``, as mmCIF writers do)."""
        if self.numeric:
            if self.values.dtype.kind == "f":
                text = np.array([repr(float(v)).encode() for v in self.values], dtype=bytes)
            else:
                text = self.values.astype(np.int64).astype("S")
        else:
            text = self.values.copy()
            text[text == b""] = b"."
        if self.mask is not None and self.mask.any():
            width = max(text.dtype.itemsize, 1)
            text = text.astype(f"S{width}")
            text[self.mask == 1] = b"."
            text[self.mask == 2] = b"?"
        return text


def _byte_array(data: Any, encoding: dict[str, Any]) -> np.ndarray:
    kind = _TYPES.get(int(encoding["type"]))
    if kind is None:
        raise _Bad(f"unknown ByteArray type {encoding['type']!r}")
    if not isinstance(data, bytes | bytearray):
        raise _Bad("ByteArray data is not bytes")
    if len(data) % np.dtype(kind).itemsize:
        raise _Bad("ByteArray data length is not a multiple of its type's size")
    return np.frombuffer(data, dtype=kind)


def _fixed_point(data: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    # float64 whatever srcType says: int / factor correctly rounded, as parsing the decimal is
    return data.astype(np.float64) / float(encoding["factor"])


def _interval_quantization(data: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    low, high, steps = float(encoding["min"]), float(encoding["max"]), int(encoding["numSteps"])
    if steps < 2:
        raise _Bad("IntervalQuantization with fewer than 2 steps")
    return low + (high - low) / (steps - 1) * data.astype(np.float64)


def _run_length(data: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    if len(data) % 2:
        raise _Bad("RunLength data has an odd length")
    counts = data[1::2].astype(np.int64)
    if (counts < 0).any() or int(counts.sum()) != int(encoding["srcSize"]):
        raise _Bad("RunLength counts do not add up to its srcSize")
    return np.repeat(data[0::2].astype(np.int64), counts)


def _delta(data: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    values = np.cumsum(data.astype(np.int64))
    values += int(encoding["origin"])
    return values


def _integer_packing(data: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    # A value at the packed type's limit continues into the next one (they add up).
    values = data.astype(np.int64)
    info = np.iinfo(data.dtype)
    at_limit = values == info.max
    if info.min < 0:
        at_limit |= values == info.min
    ends = np.flatnonzero(~at_limit)
    size = int(encoding["srcSize"])
    if (len(values) and at_limit[-1]) or len(ends) != size:
        raise _Bad("IntegerPacking data does not unpack to its srcSize")
    if size == 0:
        return np.zeros(0, np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    return np.add.reduceat(values, starts)


def _string_array(data: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    text = encoding["stringData"]
    if not isinstance(text, str):
        raise _Bad("StringArray stringData is not text")
    offsets = _decode(encoding["offsets"], encoding["offsetEncoding"]).astype(np.int64)
    indices = _decode(data, encoding["dataEncoding"]).astype(np.int64)
    if len(offsets) == 0 or (np.diff(offsets) < 0).any() or offsets[0] < 0 or offsets[-1] > len(text):
        raise _Bad("StringArray offsets are out of order or out of range")
    bounds = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    table = np.array([text[a:b].encode("utf-8") for a, b in bounds] + [b""], dtype=bytes)
    if len(indices) and (indices.max() >= len(offsets) - 1 or indices.min() < -1):
        raise _Bad("StringArray index out of range")
    return table[indices]  # -1 (no value) picks the trailing b""


_DECODERS = {
    "FixedPoint": _fixed_point,
    "IntervalQuantization": _interval_quantization,
    "RunLength": _run_length,
    "Delta": _delta,
    "IntegerPacking": _integer_packing,
}


def _decode(data: Any, encodings: Any) -> np.ndarray:
    """Undo a column's encodings, the last applied first."""
    if not isinstance(encodings, list) or not encodings:
        raise _Bad("no encoding")
    values: Any = data
    for encoding in reversed(encodings):
        kind = encoding.get("kind") if isinstance(encoding, dict) else None
        if kind == "ByteArray":
            values = _byte_array(values, encoding)
        elif kind == "StringArray":
            values = _string_array(values, encoding)
        elif kind in _DECODERS:
            if not isinstance(values, np.ndarray) or values.dtype.kind not in "iuf":
                raise _Bad(f"{kind} applied to data that is not numbers")
            values = _DECODERS[kind](values, encoding)
        else:
            raise _Bad(f"unknown encoding {kind!r}")
    if not isinstance(values, np.ndarray):
        raise _Bad("undecoded data (no ByteArray or StringArray step)")
    return values


def _column(path: Path, category: str, column: Any, rows: int) -> tuple[str, DecodedColumn]:
    name = column.get("name") if isinstance(column, dict) else None
    if not isinstance(name, str):
        raise StructureError(f"{path}: malformed BinaryCIF ({category}: a column without a name)")
    try:
        data = column["data"]
        values = _decode(data["data"], data["encoding"])
        mask = None
        if column.get("mask") is not None:
            mask = _decode(column["mask"]["data"], column["mask"]["encoding"]).astype(np.uint8)
    except (_Bad, KeyError, TypeError, ValueError) as exc:
        why = exc.args[0] if isinstance(exc, _Bad) else f"{type(exc).__name__}: {exc}"
        raise StructureError(f"{path}: malformed BinaryCIF column {category}.{name} ({why})") from None
    if len(values) != rows or (mask is not None and len(mask) != rows):
        raise StructureError(
            f"{path}: truncated or malformed BinaryCIF column {category}.{name} "
            f"({len(values)} values, the category has {rows} rows)"
        )
    return name, DecodedColumn(values, mask)


def _unpack(path: Path, data: bytes) -> Any:
    import msgpack

    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        raise StructureError(f"{path}: malformed BinaryCIF file (data after its end)") from None
    except (ValueError, msgpack.UnpackException) as exc:
        if "incomplete" in str(exc).lower():
            raise StructureError(
                f"{path}: truncated BinaryCIF file (the MessagePack data ends early)"
            ) from None
        raise StructureError(f"{path}: not a readable BinaryCIF file ({exc})") from None


def atom_site_arrays(path: Path, data: bytes) -> dict[str, DecodedColumn]:
    """The ``_atom_site`` columns of the first data block that has them, decoded, by item
    name (``Cartn_x``, ...). A file that is not BinaryCIF, truncated, or whose columns do
    not decode is a :class:`StructureError` naming the file and the reason."""
    if not _is_map(data):
        raise StructureError(
            f"{path}: not a BinaryCIF file (it does not start with a MessagePack map); is it an mmCIF "
            "text file named .bcif?"
        )
    document = _unpack(path, data)
    blocks = document.get("dataBlocks") if isinstance(document, dict) else None
    if not isinstance(blocks, list):
        raise StructureError(f"{path}: not a BinaryCIF file (no dataBlocks)")
    if not blocks:
        raise StructureError(f"{path}: empty BinaryCIF file (no data block)")
    for block in blocks:
        categories = block.get("categories") if isinstance(block, dict) else None
        if not isinstance(categories, list):
            raise StructureError(f"{path}: malformed BinaryCIF (a data block without categories)")
        for category in categories:
            if not isinstance(category, dict) or category.get("name") != "_atom_site":
                continue
            rows = category.get("rowCount")
            columns = category.get("columns")
            if not isinstance(rows, int) or not isinstance(columns, list):
                raise StructureError(f"{path}: malformed BinaryCIF (_atom_site without rowCount or columns)")
            return dict(_column(path, "_atom_site", column, rows) for column in columns)
    raise StructureError(f"{path}: no _atom_site category in the BinaryCIF file (not a model)")


def _token(value: bytes) -> bytes:
    if not value:
        return b"."
    if any(c in value for c in b" \t'\"") or value[:1] in (b"_", b"#", b"$", b";", b"["):
        if b"'" not in value:
            return b"'" + value + b"'"
        return b'"' + value + b'"'
    return value


def to_mmcif(path: Path, columns: dict[str, DecodedColumn]) -> bytes:
    """The ``_atom_site`` columns as the text of an mmCIF file (one loop), for Bio.PDB."""
    tags = list(columns)
    text = {tag: columns[tag].strings() for tag in tags}
    lines = [b"data_" + (path.stem.encode("ascii", "replace") or b"bcif"), b"loop_"]
    lines += [b"_atom_site." + tag.encode() for tag in tags]
    rows = len(next(iter(text.values()))) if text else 0
    for row in range(rows):
        lines.append(b" ".join(_token(text[tag][row]) for tag in tags))
    return b"\n".join(lines) + b"\n"


class _BinaryColumns(_LoopColumns):
    """Decoded ``_atom_site`` columns behind the interface the mmCIF loop reading uses."""

    def __init__(self, path: Path, arrays: dict[str, DecodedColumn]) -> None:
        super().__init__(path, lists={})
        self.arrays = arrays
        self.tags = set(arrays)

    def lengths(self) -> set[int]:
        return {len(column) for column in self.arrays.values()}

    def strings(self, tag: str) -> np.ndarray:
        if tag not in self._strings:
            self._strings[tag] = self.arrays[tag].strings()
        return self._strings[tag]

    def some_strings(self, tag: str, rows: np.ndarray) -> np.ndarray:
        if tag in self._strings:
            return self._strings[tag][rows]
        column = self.arrays[tag]
        mask = None if column.mask is None else column.mask[rows]
        return DecodedColumn(column.values[rows], mask).strings()

    def numbers(self, tag: str, dtype: type, what: str, rows: np.ndarray | None = None) -> np.ndarray:
        column = self.arrays[tag]
        if not column.numeric:
            return super().numbers(tag, dtype, what, rows)
        values = column.values if rows is None else column.values[rows]
        mask = column.mask if rows is None or column.mask is None else column.mask[rows]
        unusable = mask is not None and bool(mask.any())
        if dtype is np.int64 and values.dtype.kind == "f":
            unusable = unusable or not bool(np.all(values == np.round(values)))
        if unusable:
            raise StructureError(f"{self.path}: {what} in _atom_site; re-download or repair the file")
        return values.astype(dtype)


def read_records_bcif(path: Path, data: bytes) -> ResidueRecords:
    """Residue records of the first model of a BinaryCIF file, read as an mmCIF file's
    ``_atom_site`` loop is (same checks, same chains)."""
    return _cif_records(path, _BinaryColumns(path, atom_site_arrays(path, data)))
