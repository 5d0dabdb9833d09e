"""Featurize caches from before the graph store: one file per input, ``root/ab/<file key>.pt``.

Up to the graph store (:mod:`protsteps.store`), ``protsteps featurize`` wrote each input's
result to its own file in the cache folder, ``<root>/<first two hex digits of the key>/<key>.pt``
with ``<key>`` a 64-digit SHA-256. Two layouts were written:

- format 2: the line ``protsteps-graphs-2``, the SHA-256 of the payload (64 hex digits) and a
  newline, then the payload;
- format 1: the payload alone.

The payload is a ``torch.save``\\ d dict ``{"format", "source", "chains": [{"chain",
"residues", "graph"}], "errors"}``, each ``graph`` a ``ProteinGraph.to_dict()``.

Today's code never reads these entries: the cache keys fingerprint the reading and
featurizing code, so an old entry's key is never asked for, and re-keying it under today's
keys would serve graphs that older code made as if today's code had made them. What this
module gives is what ``protsteps cache`` needs: finding the entries (:func:`legacy_files`,
:func:`scan_legacy`), reading one without trusting it (:func:`read_legacy`: the header,
the checksum and ``torch.load(weights_only=True)``; a damaged entry gets a reason, never an
exception) and the one-line note ``featurize``/``pretrain`` print when a cache folder holds
such entries (:func:`legacy_note`). Nothing here imports torch until an entry is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "LEGACY_MAGIC",
    "LegacyEntry",
    "LegacyFile",
    "LegacyScan",
    "NOTE_LIMIT",
    "format_bytes",
    "legacy_files",
    "legacy_note",
    "legacy_temporaries",
    "read_legacy",
    "scan_legacy",
    "source_exists",
]

#: the first line of a format-2 entry (format 1 had no header)
LEGACY_MAGIC = b"protsteps-graphs-2\n"
#: the entries the note of ``featurize``/``pretrain`` looks at, at most: past this many it
#: says "more than"
NOTE_LIMIT = 20_000
#: entries of the cache folder itself looked at, at most, for the two-hex-digit folders
_ROOT_LIMIT = 10_000

_SUBFOLDER = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"([0-9a-f]{64})\.pt")
#: what an interrupted atomic write of an entry left (protsteps.files' temporary names)
_TEMPORARY = re.compile(r"\.[0-9a-f]{64}\.pt\.[0-9a-f]+\.tmp")
#: a torch.save file (a zip archive) starts with these bytes
_ZIP = b"PK\x03\x04"


@dataclasses.dataclass(frozen=True)
class LegacyFile:
    """One legacy entry file found on disk, not yet read."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        """``ab/<key>.pt``: the entry's name relative to the cache folder."""
        return f"{self.path.parent.name}/{self.path.name}"


@dataclasses.dataclass
class LegacyEntry:
    """What one legacy entry holds, or why it cannot be read (:attr:`damaged`)."""

    path: Path
    size: int
    #: 1 or 2; ``None`` when the entry is damaged
    format: int | None = None
    #: the structure file (or ``CONTAINER::MEMBER``) the entry was made from
    source: str = ""
    #: ``(chain id, residues)`` of each chain it holds
    chains: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    #: why the entry cannot be used (``None``: it was read)
    damaged: str | None = None


@dataclasses.dataclass(frozen=True)
class LegacyScan:
    """How many legacy entries a folder holds and their bytes; ``complete`` is false when
    the scan stopped at its limit (then both are lower bounds)."""

    count: int
    bytes: int
    complete: bool = True


# ---------------------------------------------------------------------------- finding


def _subfolders(root: Path) -> list[Path]:
    """The two-hex-digit folders directly in ``root`` (at most :data:`_ROOT_LIMIT` of the
    folder's entries are looked at), sorted."""
    found = []
    try:
        with os.scandir(root) as entries:
            for seen, entry in enumerate(entries):
                if seen >= _ROOT_LIMIT:
                    break
                if _SUBFOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    found.append(Path(entry.path))
    except OSError:  # no folder, not a folder, not readable: no legacy entries to speak of
        return []
    return sorted(found)


def legacy_files(root: str | os.PathLike[str]) -> Iterator[LegacyFile]:
    """Every legacy entry file under ``root`` (``ab/<key>.pt`` whose key starts with
    ``ab``), in the order of their names. Symlinks and other names are left alone."""
    for folder in _subfolders(Path(root)):
        try:
            with os.scandir(folder) as entries:
                names = sorted(
                    (entry.name, entry)
                    for entry in entries
                    if (found := _ENTRY.fullmatch(entry.name)) and found.group(1)[:2] == folder.name
                )
        except OSError:
            continue
        for _, entry in names:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield LegacyFile(Path(entry.path), stat.st_size, stat.st_mtime_ns)


def legacy_temporaries(root: str | os.PathLike[str]) -> list[Path]:
    """The temporary files that interrupted writes of legacy entries left in the
    two-hex-digit folders."""
    found = []
    for folder in _subfolders(Path(root)):
        try:
            with os.scandir(folder) as entries:
                found += [
                    Path(e.path)
                    for e in entries
                    if _TEMPORARY.fullmatch(e.name) and e.is_file(follow_symlinks=False)
                ]
        except OSError:
            continue
    return sorted(found)


def scan_legacy(root: str | os.PathLike[str], limit: int | None = None) -> LegacyScan:
    """The number of legacy entries under ``root`` and their bytes; with ``limit``, the
    scan stops after that many (``complete`` false)."""
    number = size = 0
    for file in legacy_files(root):
        if limit is not None and number >= limit:
            return LegacyScan(number, size, complete=False)
        number += 1
        size += file.size
    return LegacyScan(number, size)


def format_bytes(size: int) -> str:
    """``532 B``, ``12.3 KB``, ``4.1 MB``, ``2.0 GB`` (powers of 1000)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def legacy_note(root: str | os.PathLike[str] | None) -> str | None:
    """One line for ``featurize`` and ``pretrain`` to print when the cache folder ``root``
    (``None``: the default one) holds legacy entries: how many, their bytes and what to do;
    ``None`` when it holds none. Looks at no more than :data:`NOTE_LIMIT` entries, and
    costs one directory listing when there are none."""
    from .featurize import default_cache_dir

    folder = Path(root) if root else default_cache_dir()
    scan = scan_legacy(folder, limit=NOTE_LIMIT)
    if not scan.count:
        return None
    more = "" if scan.complete else "more than "
    entries = "entry" if scan.count == 1 and scan.complete else "entries"
    where = "" if not root or folder == default_cache_dir() else f" --cache-dir {folder}"
    return (
        f"note: {folder} holds {more}{scan.count} {entries} of the per-file cache of earlier "
        f"protsteps versions ({more}{format_bytes(scan.bytes)}), which this version does not "
        f"read; run protsteps cache migrate{where} to featurize their sources into the graph "
        "store (--remove-legacy deletes them afterwards)"
    )


# ---------------------------------------------------------------------------- reading


def read_legacy(path: str | os.PathLike[str]) -> LegacyEntry:
    """The legacy entry at ``path``: its source, chains and errors, or (never an
    exception) the reason it cannot be used in :attr:`LegacyEntry.damaged`. The payload is
    loaded with ``torch.load(weights_only=True)``, after its checksum (format 2) matched."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        return LegacyEntry(path, 0, damaged=f"cannot be read ({exc.strerror or exc})")
    entry = LegacyEntry(path, len(blob))
    if blob.startswith(LEGACY_MAGIC):
        start = len(LEGACY_MAGIC)
        checksum, payload = blob[start : start + 64], blob[start + 65 :]
        if blob[start + 64 : start + 65] != b"\n" or not re.fullmatch(rb"[0-9a-f]{64}", checksum):
            entry.damaged = "the header is cut short or malformed"
            return entry
        if hashlib.sha256(payload).hexdigest().encode() != checksum:
            entry.damaged = "its payload does not match its SHA-256 (damaged or cut short)"
            return entry
        expected = 2
    elif blob.startswith(_ZIP):
        payload, expected = blob, 1
    else:
        entry.damaged = (
            "empty" if not blob else "not a protsteps cache entry (neither header nor torch.save data)"
        )
        return entry
    import torch

    from .files import unreadable_reason

    try:
        data = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign payload: whatever torch raises
        entry.damaged = f"its payload cannot be loaded: {unreadable_reason(exc)}"
        return entry
    problem = _check(data, expected)
    if problem:
        entry.damaged = problem
        return entry
    entry.format = expected
    entry.source = data["source"]
    entry.chains = [(c["chain"], int(c["residues"])) for c in data["chains"]]
    entry.errors = list(data["errors"])
    return entry


def _check(data: Any, expected: int) -> str | None:
    """What is wrong with a loaded payload, or ``None``."""
    if not isinstance(data, dict):
        return f"its payload is a {type(data).__name__}, not an entry"
    if data.get("format") != expected:
        return f"its payload says format {data.get('format')!r} where the layout is format {expected}"
    if not isinstance(data.get("source"), str) or not data["source"]:
        return "it names no source file"
    chains, errors = data.get("chains"), data.get("errors")
    if not isinstance(chains, list) or not all(
        isinstance(c, dict) and isinstance(c.get("chain"), str) and isinstance(c.get("residues"), int)
        for c in chains
    ):
        return "its chains are not a list of {chain, residues, graph}"
    if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
        return "its errors are not a list of strings"
    return None


def source_exists(source: str) -> bool:
    """Whether the file an entry was made from is there (for ``CONTAINER::MEMBER``, the
    container); a relative path is taken from the current folder."""
    from .sources import split_member

    container, _ = split_member(source)
    return Path(container).is_file()
