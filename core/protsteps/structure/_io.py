"""Getting the text of a structure file: decompression, format detection, chain selection."""

from __future__ import annotations

import functools
import os
import types
import zlib
from pathlib import Path
from typing import Literal

from ..errors import StructureError

_inflate: types.ModuleType = zlib
_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
try:  # ISA-L's inflate reads the same streams as zlib, about 3x faster (structures come gzipped)
    from isal import isal_zlib

    _inflate = isal_zlib
    _INFLATE_ERRORS = (zlib.error, getattr(isal_zlib, "error"))  # noqa: B009 (untyped module)
except ImportError:  # pragma: no cover - isal is a dependency; zlib where it cannot be installed
    pass

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SizeLimitError",
    "Format",
    "SUFFIXES",
    "SUFFIX_LIST",
    "decompress",
    "is_structure_path",
    "named_format",
    "read_bytes",
    "split_selection",
    "structure_format",
]

Format = Literal["pdb", "cif", "bcif"]

#: file name endings read as structures (each may also end in ``.gz``)
SUFFIXES: dict[str, Format] = {".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif", ".bcif": "bcif"}
#: the suffixes as messages name them: ``.pdb/.ent/.cif/.mmcif/.bcif``
SUFFIX_LIST = "/".join(SUFFIXES)


def _base_suffix(path: str | os.PathLike[str]) -> str:
    # (asked several times per input, by the name rules, the reader and the cache key: the
    # answer is kept by the spelling, two Path objects fewer each time)
    return _suffix_of_spelling(os.fspath(path))


@functools.lru_cache(maxsize=4096)
def _suffix_of_spelling(path: str) -> str:
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def is_structure_path(path: str | os.PathLike[str]) -> bool:
    """Whether a file name says it is a structure (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``,
    ``.bcif``, optionally ``.gz``)."""
    return _base_suffix(path) in SUFFIXES


def split_selection(spec: str | os.PathLike[str]) -> tuple[Path, tuple[str, ...] | None]:
    """Split ``path`` or ``path:CHAIN`` (``path:A,B`` for several) into the path and the chain
    identifiers; ``None`` means every chain.

    A path that exists as written wins, so a file name containing ``:`` still works. A blank
    chain identifier is written ``_``.
    """
    text = os.fspath(spec)
    if ":" not in text:
        return _whole_file(text)
    if os.path.exists(text):
        return Path(text), None
    head, _, tail = text.rpartition(":")
    if not tail or "/" in tail or os.sep in tail or head.endswith(":"):
        # (``CONTAINER::MEMBER``, a member of a tar archive or FoldComp database, is no selection)
        return Path(text), None
    chains = tuple(c.strip() for c in tail.split(",") if c.strip())
    return Path(head), chains or None


@functools.lru_cache(maxsize=4096)
def _whole_file(text: str) -> tuple[Path, None]:
    # (a spec without ":" is a path as it stands; asked several times per input: kept by
    # spelling, a Path object fewer each time)
    return Path(text), None


#: the default of ``max_bytes``: how large a file, or its content once gunzipped, may be
DEFAULT_MAX_BYTES = 1 << 30

#: ``columnar`` (default) reads whole columns with numpy; ``biopython`` builds Bio.PDB's
#: object tree. Both give the same chains; the second is the reference. (Here, without
#: numpy, so that the command line's help names them without importing it.)
Reader = Literal["columnar", "biopython"]
READERS: tuple[Reader, ...] = ("columnar", "biopython")

# gunzipped in pieces of at most this size, so that the limit is checked before it is passed
_PIECE = 16 << 20


class SizeLimitError(StructureError):
    """A file, or its content once gunzipped, is larger than the size limit. The outcome
    depends on the limit, not only on the bytes, so it is never cached."""


def _too_large(path: Path, what: str, max_bytes: int) -> StructureError:
    return SizeLimitError(
        f"{path}: {what} more than {max_bytes / (1 << 20):,.0f} MiB (the size limit); raise it "
        "(protsteps featurize --max-mib) if the file is genuine"
    )


def read_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The raw bytes of a file; a missing or unreadable file, or one larger than
    ``max_bytes``, is a :class:`StructureError`. At most ``max_bytes + 1`` bytes are read."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise _too_large(path, "is", max_bytes)
            # the size the file has first (a read of max_bytes + 1 reserves that much memory
            # at once, which costs more than reading a small file), then whatever a growing
            # file has added since, up to the limit
            data = handle.read(size + 1)
            if len(data) > size:
                data += handle.read(max_bytes + 1 - len(data))
    except FileNotFoundError:
        raise StructureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StructureError(f"{path}: is a folder, not a structure file") from None
    except OSError as exc:
        raise StructureError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise _too_large(path, "is", max_bytes)
    return data


def decompress(path: Path, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's content, gunzipped when it is a gzip stream (whatever its name says).

    The stream is inflated piece by piece and refused as soon as it passes ``max_bytes``, so
    a small file that inflates to gigabytes (a gzip bomb) costs at most ``max_bytes`` of
    memory. Concatenated gzip members are read one after the other, as ``gzip`` does.
    """
    if data[:2] != b"\x1f\x8b":
        if path.name.lower().endswith(".gz"):
            raise StructureError(f"{path}: named .gz but is not gzip-compressed")
        if len(data) > max_bytes:
            raise _too_large(path, "is", max_bytes)
        return data
    pieces: list[bytes] = []
    total = 0
    pending = data
    try:
        stream = _inflate.decompressobj(wbits=31)
        while True:
            piece = stream.decompress(pending, _PIECE)
            total += len(piece)
            if total > max_bytes:
                raise _too_large(path, "decompresses to", max_bytes)
            pieces.append(piece)
            if stream.eof:
                rest = stream.unused_data
                if not rest.strip(b"\x00"):
                    break
                if rest[:2] != b"\x1f\x8b":
                    raise StructureError(f"{path}: corrupt gzip file (data after the end of the gzip stream)")
                stream = _inflate.decompressobj(wbits=31)  # the next member
                pending = rest
                continue
            pending = stream.unconsumed_tail
            if not pending and not piece:
                raise StructureError(f"{path}: truncated gzip file (the compressed stream ends early)")
    except _INFLATE_ERRORS as exc:
        raise StructureError(f"{path}: corrupt gzip file ({exc})") from None
    return b"".join(pieces)


_HIGH_BYTES = bytes(range(128, 256))


def check_text(path: Path, text: bytes) -> None:
    """Refuse content that cannot be a structure file: empty or binary."""
    if not text or text.isspace():  # (not text.strip(), which copies the whole text)
        raise StructureError(f"{path}: empty file")
    head = text[:65536]
    if b"\x00" in head:
        raise StructureError(f"{path}: binary content, not a PDB or mmCIF text file")
    # Text files are ASCII; a few stray accented characters in REMARKs are tolerated.
    if head.isascii():
        return
    high = len(head) - len(head.translate(None, _HIGH_BYTES))
    if high > len(head) // 20:
        raise StructureError(f"{path}: binary content, not a PDB or mmCIF text file")


def named_format(path: str | os.PathLike[str]) -> Format | None:
    """The format a file's name says (``None``: the name does not say)."""
    return SUFFIXES.get(_base_suffix(path))


def structure_format(path: Path, text: bytes) -> Format:
    """``pdb`` or ``cif``, from the file name or else from the (text) content; BinaryCIF
    content is told apart before (:func:`protsteps.structure._bcif.is_bcif`)."""
    suffix = _base_suffix(path)
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    head = text[:65536]
    stripped = head.lstrip()
    if stripped.startswith(b"data_") or b"\n_atom_site." in head or b"\nloop_" in head:
        return "cif"
    if head.startswith((b"ATOM  ", b"HETATM", b"HEADER", b"MODEL ", b"CRYST1", b"REMARK")) or (
        b"\nATOM  " in head or b"\nHETATM" in head
    ):
        return "pdb"
    raise StructureError(
        f"{path}: cannot tell the format (not named {SUFFIX_LIST} and the content looks "
        "like neither PDB nor mmCIF)"
    )
