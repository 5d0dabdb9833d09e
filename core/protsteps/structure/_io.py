"""Getting the text of a structure file: decompression, format detection, chain selection."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Literal

from ..errors import StructureError

__all__ = ["Format", "SUFFIXES", "split_selection", "structure_format", "read_bytes", "is_structure_path"]

Format = Literal["pdb", "cif"]

#: file name endings read as structures (each may also end in ``.gz``)
SUFFIXES: dict[str, Format] = {".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif"}


def _base_suffix(path: str | os.PathLike[str]) -> str:
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def is_structure_path(path: str | os.PathLike[str]) -> bool:
    """Whether a file name says it is a structure (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``,
    optionally ``.gz``)."""
    return _base_suffix(path) in SUFFIXES


def split_selection(spec: str | os.PathLike[str]) -> tuple[Path, tuple[str, ...] | None]:
    """Split ``path`` or ``path:CHAIN`` (``path:A,B`` for several) into the path and the chain
    identifiers; ``None`` means every chain.

    A path that exists as written wins, so a file name containing ``:`` still works. A blank
    chain identifier is written ``_``.
    """
    text = os.fspath(spec)
    if os.path.exists(text) or ":" not in text:
        return Path(text), None
    head, _, tail = text.rpartition(":")
    if not tail or "/" in tail or os.sep in tail or head.endswith(":"):
        # (``CONTAINER::MEMBER``, a member of a tar archive or FoldComp database, is no selection)
        return Path(text), None
    chains = tuple(c.strip() for c in tail.split(",") if c.strip())
    return Path(head), chains or None


def read_bytes(path: Path) -> bytes:
    """The raw bytes of a file; a missing or unreadable file is a :class:`StructureError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StructureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StructureError(f"{path}: is a folder, not a structure file") from None
    except OSError as exc:
        raise StructureError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def decompress(path: Path, data: bytes) -> bytes:
    """The file's content, gunzipped when it is a gzip stream (whatever its name says)."""
    if data[:2] != b"\x1f\x8b":
        if path.name.lower().endswith(".gz"):
            raise StructureError(f"{path}: named .gz but is not gzip-compressed")
        return data
    try:
        stream = zlib.decompressobj(wbits=31)
        text = stream.decompress(data)
        if not stream.eof:
            raise EOFError
        if stream.unused_data.strip(b"\x00"):
            # more than one gzip member (concatenated .gz files): the slow path reads all
            return gzip.decompress(data)
        return text
    except EOFError:
        raise StructureError(f"{path}: truncated gzip file (the compressed stream ends early)") from None
    except (OSError, zlib.error) as exc:
        raise StructureError(f"{path}: corrupt gzip file ({exc})") from None


_HIGH_BYTES = bytes(range(128, 256))


def check_text(path: Path, text: bytes) -> None:
    """Refuse content that cannot be a structure file: empty or binary."""
    if not text.strip():
        raise StructureError(f"{path}: empty file")
    head = text[:65536]
    if b"\x00" in head:
        raise StructureError(f"{path}: binary content, not a PDB or mmCIF text file")
    # Text files are ASCII; a few stray accented characters in REMARKs are tolerated.
    high = len(head) - len(head.translate(None, _HIGH_BYTES))
    if high > len(head) // 20:
        raise StructureError(f"{path}: binary content, not a PDB or mmCIF text file")


def structure_format(path: Path, text: bytes) -> Format:
    """``pdb`` or ``cif``, from the file name or else from the content."""
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
        f"{path}: cannot tell the format (not named .pdb/.ent/.cif/.mmcif and the content looks "
        "like neither PDB nor mmCIF)"
    )
