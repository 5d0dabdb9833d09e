"""Structures inside containers: tar archives and FoldComp databases, read in place.

An input is a file, a folder, a list of paths, or a *container*:

- a tar archive (``.tar``, ``.tar.gz``, ``.tgz``), such as the per-proteome shards the
  AlphaFold Database distributes. It is read as one stream, front to back; no member is
  ever written to disk. Members whose names are structure files (``.pdb``, ``.cif``, ...,
  optionally ``.gz``) are featurized; others are reported as skipped;
- a FoldComp database (``afdb_rep_v4``: the data file beside its ``.index``, ``.dbtype``
  and ``.lookup``). Records are read straight from the data file through its ffindex
  index; each is decompressed with ``foldcomp`` (``pip install "protsteps[foldcomp]"``) in
  the process that featurizes it.

Each structure in a container is named ``CONTAINER::MEMBER`` (``shard.tar::AF-P69905-F1-
model_v4.cif.gz``, ``afdb_rep_v4::AF-P69905-F1-model_v4``) in reports, like a file. That
spelling also selects members: ``afdb_rep_v4::AF-P69905-F1-model_v4`` on the command line
or in a list file (one per line) picks entries of a database by name; ``:A`` after a member
selects chains as for a file.

AlphaFold DB names (``AF-<accession>-F<fragment>-model_v<version>``, any version) are
recognised: a shard that holds one model twice (as ``.cif.gz`` and ``.pdb.gz``, as AFDB's
proteome tars do) gives it once, the first copy; the other is reported as skipped.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import re
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ProtstepsError, StructureError
from .structure._io import SUFFIX_LIST

__all__ = [
    "SEPARATOR",
    "AFDB_NAME",
    "Item",
    "Skipped",
    "afdb_model",
    "container_kind",
    "count_members",
    "decode_item",
    "is_archive_name",
    "iterate_members",
    "split_member",
]

SEPARATOR = "::"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: an AlphaFold DB entry name: accession, fragment, model version (any)
AFDB_NAME = re.compile(r"AF-(?P<accession>[A-Za-z0-9_]+)-F(?P<fragment>\d+)-model_v(?P<version>\d+)")


@dataclasses.dataclass(frozen=True)
class Item:
    """One structure read out of a container: what reports call it, its raw bytes, and how
    they are encoded (``""``: a structure file's bytes, maybe gzipped; ``"foldcomp"``: a
    FoldComp FCZ record)."""

    spec: str
    data: bytes
    codec: str = ""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A member that is not featurized, and why."""

    source: str
    reason: str


def afdb_model(name: str) -> tuple[str, int, int] | None:
    """``(accession, fragment, version)`` of an AlphaFold DB name, else ``None``."""
    match = AFDB_NAME.search(Path(name).name)
    if match is None:
        return None
    return match["accession"], int(match["fragment"]), int(match["version"])


def split_member(spec: str) -> tuple[str, str | None]:
    """``(container, member)`` of ``CONTAINER::MEMBER`` (member ``None`` without ``::``).
    The member keeps any ``:CHAIN`` selection."""
    container, sep, member = spec.partition(SEPARATOR)
    return (container, member) if sep else (spec, None)


def is_archive_name(path: str | os.PathLike[str]) -> bool:
    """Whether a file name says it is a tar archive (``.tar``, ``.tar.gz``, ``.tgz``)."""
    return os.path.basename(os.fspath(path)).lower().endswith(ARCHIVE_SUFFIXES)


def container_kind(path: str | os.PathLike[str]) -> str | None:
    """``"tar"``, ``"foldcomp"`` or ``None`` (not a container)."""
    # strings and os.path: this runs for every input of a featurize run, where one stat of
    # the ``.index`` file (absent beside a structure file) usually settles it
    text = os.fspath(path)
    if is_archive_name(text):
        return "tar" if os.path.isfile(text) else None
    if os.path.isfile(f"{text}.index") and os.path.isfile(f"{text}.dbtype") and os.path.isfile(text):
        return "foldcomp"
    return None


# ---------------------------------------------------------------------------- tar


def _structure_member(name: str) -> bool:
    from .structure import is_structure_path

    return is_structure_path(name)


def _tar_members(path: Path, wanted: Mapping[str, str] | None) -> Iterator[Item | Skipped]:
    models: dict[tuple[str, int, int], str] = {}
    try:
        archive = tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StructureError(f"{path}: not a readable tar archive ({exc})") from None
    found: set[str] = set()
    with archive:
        try:
            for member in archive:
                if not member.isfile():
                    continue
                if wanted is not None and member.name not in wanted:
                    continue
                label = f"{path}{SEPARATOR}{member.name}{wanted[member.name] if wanted else ''}"
                found.add(member.name)
                if not _structure_member(member.name):
                    yield Skipped(label, f"not a structure file name ({SUFFIX_LIST}, optionally .gz)")
                    continue
                model = afdb_model(member.name)
                if model is not None:
                    first = models.setdefault(model, label)
                    if first != label:
                        yield Skipped(label, f"the same AlphaFold DB model as {first}")
                        continue
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover - isfile() members always have data
                    continue
                yield Item(label, handle.read())
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            yield Skipped(
                f"{path}",
                f"the archive ends early or is damaged ({exc}); members after this point are missing",
            )
    for name in sorted(set(wanted or ()) - found):
        yield Skipped(f"{path}{SEPARATOR}{name}", "no such member in the archive")


def _count_tar(path: Path) -> int:
    # an uncompressed archive is counted by seeking from header to header (no data read);
    # a compressed one has to be decompressed once more
    try:
        if path.name.lower().endswith(".tar"):
            archive = tarfile.open(path, mode="r:")
        else:
            archive = tarfile.open(path, mode="r|*")
        with archive:
            return sum(1 for member in archive if member.isfile())
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return 1


# ---------------------------------------------------------------------------- FoldComp


class FoldcompIndex:
    """A FoldComp database's ffindex: names, offsets and lengths of its records, read from
    ``DB.index`` and ``DB.lookup``; records are sliced from the memory-mapped data file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, tuple[int, int]] = {}
        names: dict[str, str] = {}
        try:
            lookup = Path(f"{path}.lookup")
            if lookup.is_file():
                for line in lookup.read_text("utf-8").splitlines():
                    cells = line.split("\t")
                    if len(cells) >= 2:
                        names[cells[0]] = cells[1]
            self.order: list[str] = []
            for number, line in enumerate(Path(f"{path}.index").read_text("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                cells = line.split("\t")
                if len(cells) < 3 or not cells[1].isdigit() or not cells[2].isdigit():
                    raise ProtstepsError(f"{path}.index: line {number} is not 'key<TAB>offset<TAB>length'")
                name = names.get(cells[0], cells[0])
                self.records[name] = (int(cells[1]), int(cells[2]))
                self.order.append(name)
        except (OSError, UnicodeDecodeError) as exc:
            raise ProtstepsError(f"{path}: cannot read the FoldComp index ({exc})") from None

    def items(self, wanted: Mapping[str, str] | None) -> Iterator[Item | Skipped]:
        size = self.path.stat().st_size
        names = self.order if wanted is None else [n for n in self.order if n in wanted]
        with open(self.path, "rb") as handle:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            try:
                for name in names:
                    offset, length = self.records[name]
                    label = f"{self.path}{SEPARATOR}{name}{wanted[name] if wanted else ''}"
                    if view is None or offset + length > size:
                        yield Skipped(
                            label, "the record lies beyond the end of the data file (truncated database?)"
                        )
                        continue
                    record = view[offset : offset + length]
                    yield Item(label, record.rstrip(b"\x00"), codec="foldcomp")
            finally:
                if view is not None:
                    view.close()
        for name in sorted(set(wanted or ()) - set(self.records)):
            yield Skipped(f"{self.path}{SEPARATOR}{name}", "no such entry in the FoldComp database")


def decode_item(item: Item) -> bytes:
    """The structure file bytes of an item: FoldComp records decompressed to PDB text."""
    if item.codec != "foldcomp":
        return item.data
    try:
        import foldcomp
    except ImportError:
        raise StructureError(
            f'{item.spec}: reading FoldComp databases needs foldcomp: pip install "protsteps[foldcomp]"'
        ) from None
    if not item.data.startswith(b"FCMP"):
        raise StructureError(f"{item.spec}: not a FoldComp record (no FCMP magic)")
    try:
        _, text = foldcomp.decompress(item.data)
    except Exception as exc:
        raise StructureError(f"{item.spec}: cannot decompress the FoldComp record ({exc})") from None
    return text.encode() if isinstance(text, str) else bytes(text)


def foldcomp_version() -> str:
    """The installed foldcomp's version (part of a FoldComp record's cache key), or ``""``."""
    try:
        import importlib.metadata

        return importlib.metadata.version("foldcomp")
    except Exception:
        return ""


# ---------------------------------------------------------------------------- both


def iterate_members(container: str, wanted: Mapping[str, str] | None = None) -> Iterator[Item | Skipped]:
    """Every structure of ``container``, in stored order; or the members ``wanted`` names,
    each labelled with the chain selection it maps to (``":A"``, or ``""``)."""
    path = Path(container)
    kind = container_kind(path)
    if kind == "tar":
        yield from _tar_members(path, wanted)
    elif kind == "foldcomp":
        yield from FoldcompIndex(path).items(wanted)
    else:
        raise ProtstepsError(f"{container}: not a tar archive or a FoldComp database")


def count_members(container: str, wanted: Mapping[str, str] | None = None) -> int:
    """How many members :func:`iterate_members` will give (for progress), cheaply."""
    path = Path(container)
    if wanted is not None:
        return len(wanted)
    if container_kind(path) == "foldcomp":
        try:
            return len(FoldcompIndex(path).order)
        except ProtstepsError:
            return 1
    return _count_tar(path)


def split_member_selection(member: str) -> tuple[str, str]:
    """``("NAME", ":A")`` of a member spelled ``NAME:A``; ``(member, "")`` without chains."""
    name, colon, chains = member.rpartition(":")
    if colon and name and chains and "/" not in chains:
        return name, f":{chains}"
    return member, ""


def item_name_rules(item: Item) -> dict[str, Any]:
    """What a member's name (and codec) decides about reading it, for the cache key."""
    from .featurize import name_rules

    _, member = split_member(item.spec)
    rules = name_rules(split_member_selection(member)[0] if member else item.spec)
    if item.codec:
        rules["codec"] = item.codec
        rules["codec_version"] = foldcomp_version()
    return rules
