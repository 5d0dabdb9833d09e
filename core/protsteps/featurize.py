"""Structure files -> residue graphs, one call or many, with a content-addressed cache.

>>> import protsteps
>>> graphs = protsteps.featurize("1abc.pdb")                   # doctest: +SKIP
>>> graphs = protsteps.featurize("1abc.pdb:A", knn=16)         # doctest: +SKIP

:func:`featurize_many` runs a featurizer over many inputs (files, folders, list files, tar
archives, FoldComp databases; in worker processes if asked), keeps each input's result in
the graph store (:mod:`protsteps.store`) under a key made of everything that decides it
(the bytes, what the name decides, the featurizer's name, version, code and config, the
chain selection, the reader), and returns a :class:`FeaturizeReport` of what worked and why
the rest did not. An input that cannot be used never stops the run; it becomes a ``failed``
row with a reason.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import to_dict
from .errors import ProtstepsError, StructureError
from .files import atomic_write_text
from .graph import ProteinGraph
from .registry import Catalog, default_catalog
from .sources import (
    Item,
    Skipped,
    container_kind,
    count_members,
    decode_item,
    is_archive_name,
    item_name_rules,
    iterate_members,
    split_member,
    split_member_selection,
)
from .store import GraphStore, IndexRow, encode_record
from .structure import Reader, is_structure_path, read_chains_from_bytes, split_selection
from .structure._io import DEFAULT_MAX_BYTES, SUFFIX_LIST, SizeLimitError, named_format

__all__ = [
    "CACHE_FORMAT",
    "FeaturizeReport",
    "GraphCache",
    "FeaturizerSpec",
    "default_cache_dir",
    "expand_inputs",
    "featurize",
    "featurize_many",
]

#: bump when the cached layout changes, so old entries are not reused (changes to the reading
#: or featurizing code need no bump: their source is fingerprinted into every key)
CACHE_FORMAT = 3


def featurize(
    path: str | os.PathLike[str],
    featurizer: str = "residue_graph",
    *,
    reader: Reader = "columnar",
    **config: Any,
) -> list[ProteinGraph]:
    """One :class:`~protsteps.ProteinGraph` per protein chain of a structure file.

    Parameters
    ----------
    path:
        ``.pdb``/``.ent``/``.cif``/``.mmcif``/``.bcif``, optionally ``.gz``; ``path:A`` selects a chain.
    featurizer:
        A registered featurizer (``protsteps plugins`` lists them).
    reader:
        ``columnar`` (fast, default) or ``biopython`` (the reference reader).
    **config:
        The featurizer's settings (``radius=8.0``, ``knn=16``, ...).

    Raises
    ------
    StructureError
        No chain of the file could be featurized; the message says why for each.
    """
    spec = FeaturizerSpec.create(featurizer, config)
    file, selection = split_selection(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise StructureError(f"{file}: cannot read the file ({exc.strerror or exc})") from None
    graphs, errors = _featurize_bytes(spec.build(), file, data, selection, reader)
    if not graphs:
        raise StructureError("; ".join(errors))
    return graphs


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/protsteps/graphs``, else ``~/.cache/protsteps/graphs``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "protsteps" / "graphs"


# ---------------------------------------------------------------------------- featurizer


@dataclasses.dataclass(frozen=True)
class FeaturizerSpec:
    """A featurizer by name and validated config, with what identifies its output."""

    name: str
    config: Any
    plugin: str
    version: str
    #: SHA-256 of the source files that decide the output: the featurizer's plugin package
    #: and protsteps' readers (see :func:`code_fingerprint`)
    code: str = ""

    @classmethod
    def create(
        cls, name: str, config: Mapping[str, Any] | Any = None, catalog: Catalog | None = None
    ) -> FeaturizerSpec:
        """Validate ``config`` (a mapping of settings, or the config dataclass) for ``name``."""
        catalog = catalog or default_catalog()
        entry = catalog.get("featurizer", name)
        if config is None or isinstance(config, Mapping):
            config = catalog.make_config("featurizer", name, dict(config or {}))
        elif not isinstance(config, entry.config):
            raise ProtstepsError(
                f"featurizer '{name}' expects a {entry.config.__name__} config, got {type(config).__name__}"
            )
        code = code_fingerprint(entry.factory)
        return cls(name=name, config=config, plugin=entry.plugin, version=entry.version, code=code)

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def build(self, catalog: Catalog | None = None) -> Any:
        return (catalog or default_catalog()).build("featurizer", self.name, config=self.config)

    def identity(self) -> str:
        """Canonical JSON of everything about the featurizer that its output depends on."""
        return json.dumps(
            {
                "name": self.name,
                "plugin": self.plugin,
                "version": self.version,
                "code": self.code,
                "config": self.config_dict(),
            },
            sort_keys=True,
            separators=(",", ":"),
        )


#: protsteps' own modules whose code decides a featurized graph: the readers and the graph
_READER_CODE = ("protsteps.structure", "protsteps.graph")

#: file hashes by (path, size, mtime): a file is read again only when it changed
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _source_files(module_name: str) -> list[Path]:
    """The ``.py`` files of a module's top-level package (or the module's own file)."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except Exception:
        return []
    top = module_name.partition(".")[0]
    if module_name.startswith("protsteps.") or module_name == "protsteps":
        top = module_name  # a part of protsteps: just that module or subpackage
    try:
        package = importlib.import_module(top)
    except Exception:
        package = module
    locations = list(getattr(package, "__path__", []) or [])
    if locations:
        return sorted(p for folder in locations for p in Path(folder).rglob("*.py"))
    file = getattr(package, "__file__", None)
    return [Path(file)] if file else []


def _hash_file(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    marker = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_HASHES.get(marker)
    if digest is None:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "unreadable"
        _FILE_HASHES[marker] = digest
    return digest


def code_fingerprint(factory: Any) -> str:
    """SHA-256 over the source of what decides a featurizer's output: every ``.py`` file of
    the package that defines ``factory`` (a plugin package, editable or not) and of
    protsteps' readers. Editing any of them gives new cache keys, so the cache never serves
    graphs made by older code (``protsteps featurize --refresh`` rebuilds regardless)."""
    module_name = getattr(factory, "__module__", None) or ""
    files: list[Path] = []
    for name in (module_name, *_READER_CODE):
        if name:
            files.extend(_source_files(name))
    digest = hashlib.sha256()
    seen: set[str] = set()
    for path in files:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        # the name inside its package, so moving a checkout elsewhere keeps the key
        digest.update(f"{path.parent.name}/{path.name}:{_hash_file(path)}\n".encode())
    return digest.hexdigest()


def _featurize_bytes(
    featurizer: Any,
    file: Path,
    data: bytes,
    selection: Sequence[str] | None,
    reader: Reader,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[list[ProteinGraph], list[str]]:
    """Graphs of the usable chains and one reason per chain (or file) that was not usable."""
    chains = read_chains_from_bytes(file, data, selection, reader, max_bytes=max_bytes)
    graphs, errors = [], []
    for chain in chains:
        try:
            graphs.append(featurizer(chain))
        except StructureError as exc:
            errors.append(str(exc))
    return graphs, errors


# ---------------------------------------------------------------------------- cache


#: the featurize cache is the graph store (one name kept for code written against it)
GraphCache = GraphStore


def name_rules(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a file's *name* decides about reading its bytes: the format its suffix names
    (``None``: told from the content) and whether it is named ``.gz`` (then it must be
    gzip). Part of the cache key, so that one content under two names is read by each
    name's rules."""
    return dict(_name_rules_of(os.fspath(path)))


@functools.lru_cache(maxsize=4096)
def _name_rules_of(spelling: str) -> tuple[tuple[str, Any], ...]:
    # (asked for every input, once by the caller and once by the worker: kept by spelling)
    return (("format", named_format(spelling)), ("named_gz", Path(spelling).name.lower().endswith(".gz")))


def file_key(
    content_hash: str,
    spec_identity: str,
    selection: Sequence[str] | None,
    reader: str,
    names: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one input: its bytes, what its name decides (:func:`name_rules`),
    the featurizer (name, plugin, version, code, config), the chain selection and the
    reader. Each part is canonical JSON (the featurizer's hashed once per identity), joined
    in a fixed order and hashed."""
    parts = (
        str(CACHE_FORMAT),
        content_hash,
        _digest(spec_identity),
        json.dumps(sorted(dict(names).items()) if names is not None else None, separators=(",", ":")),
        json.dumps(list(selection) if selection is not None else None, separators=(",", ":")),
        reader,
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def chain_key(file_key_: str, chain_id: str) -> str:
    return f"{file_key_}:{chain_id}"


# ---------------------------------------------------------------------------- many files


@dataclasses.dataclass
class FileResult:
    """What one input gave: ok rows ``{source, chain, residues, key}``, error messages, and
    whether it came from the cache."""

    source: str
    ok: list[dict[str, Any]]
    errors: list[str]
    cached: bool = False
    #: its cache entry was there but damaged, and was rebuilt
    damaged: bool = False
    #: the input's file key and the SHA-256 of its bytes (empty for inputs never read)
    key: str = ""
    content: str = ""
    #: a new result's encoded record, for the calling process to store
    record: bytes | None = None


@dataclasses.dataclass
class FeaturizeReport:
    """The outcome of :func:`featurize_many`, in input order.

    ``ok``: one row per featurized chain, ``{"source", "chain", "residues", "key"}``;
    ``failed``: one row per file (or chain) that could not be used, ``{"source", "error"}``.
    """

    featurizer: str
    config: dict[str, Any]
    cache_dir: Path
    ok: list[dict[str, Any]]
    failed: list[dict[str, str]]
    files: int = 0
    cache_hits: int = 0
    #: inputs whose cache entry was damaged (checksum mismatch) and rebuilt
    cache_damaged: int = 0
    #: members of containers that were not featurized, ``{"source", "reason"}`` (not
    #: structure files, a second copy of an AlphaFold DB model, ...)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``report.json`` document."""
        return {
            "featurizer": {"name": self.featurizer, "config": self.config},
            "cache": {"hits": self.cache_hits, "damaged_rebuilt": self.cache_damaged},
            "ok": self.ok,
            "failed": self.failed,
            **({"skipped": self.skipped} if self.skipped else {}),
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[dict[str, str]]]:
    """Structure specs from files, folders (searched recursively), containers (tar
    archives, FoldComp databases, ``CONTAINER::MEMBER``; see :mod:`protsteps.sources`) and
    text files listing paths (one per line, relative to the list's folder, ``#`` comments),
    each once, in order: one file named in several ways (``a.pdb``, ``./a.pdb``, its absolute path, a
    symlink to it) is kept under its first spelling. Returns the specs and ``failed`` rows
    for inputs that are none of these."""
    specs: list[str] = []
    failed: list[dict[str, str]] = []
    seen: set[tuple[object, tuple[str, ...] | None]] = set()
    seen_members: set[str] = set()

    def add(spec: str, path: Path, selection: tuple[str, ...] | None) -> None:
        # one file however it is spelled: its device and inode (one stat; realpath would
        # make one per path component)
        try:
            info = os.stat(path)
            where: object = (info.st_dev, info.st_ino)
        except OSError:
            where = os.path.realpath(path)
        identity = (where, selection)
        if identity not in seen:
            seen.add(identity)
            specs.append(spec)

    def visit(item: str, depth: int) -> None:
        container, member = split_member(item)
        if member is not None and not os.path.exists(item):
            if container_kind(container) is None:
                failed.append(
                    {"source": item, "error": f"{container}: not a tar archive or a FoldComp database"}
                )
            elif item not in seen_members:
                seen_members.add(item)
                specs.append(item)
            return
        path, selection = split_selection(item)
        if selection is None and container_kind(path) is not None:
            add(item, path, None)
            return
        if path.is_dir() and selection is None:
            named = sorted(
                p for p in path.rglob("*") if (is_structure_path(p) or is_archive_name(p)) and not p.is_dir()
            )
            found = []
            for p in named:
                problem = _not_a_regular_file(p)
                if problem:
                    failed.append({"source": str(p), "error": problem})
                else:
                    found.append(p)
            if not named:
                failed.append(
                    {
                        "source": item,
                        "error": f"{item}: folder holds no {SUFFIX_LIST}(.gz) file",
                    }
                )
            for p in found:
                add(str(p), p, None)
        elif (problem := _not_a_regular_file(path)) is not None:
            failed.append({"source": item, "error": problem})
        elif selection is not None or is_structure_path(path) or _looks_like_structure(path):
            add(item, path, selection)
        elif depth == 0 and (columns := label_file_columns(path)) is not None:
            failed.append({"source": item, "error": label_file_message(path, columns)})
        elif depth == 0 and _is_path_list(path):
            base = path.parent
            for line in path.read_text("utf-8").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                target = line if os.path.isabs(line) else os.path.normpath(base / line)
                visit(target, depth + 1)
        else:
            failed.append(
                {
                    "source": item,
                    "error": f"{path}: not a structure file ({SUFFIX_LIST}, optionally .gz) "
                    "nor a text file listing paths",
                }
            )

    for item in inputs:
        visit(os.fspath(item), 0)
    return specs, failed


def _not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file (missing, a dangling symlink, a pipe or
    device), or ``None``. Decided from ``stat`` alone: a FIFO is never opened, since opening
    one blocks and reading it consumes what it holds."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path}: dangling symlink (its target {os.readlink(path)} does not exist)"
        return f"{path}: no such file or folder"
    except OSError as exc:
        return f"{path}: cannot read it ({exc.strerror or exc})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return (
        f"{path}: {kind}, not a regular file; protsteps reads each input more than once (to name, "
        "hash and parse it), so save the stream to a file first (e.g. zcat x.pdb.gz > x.pdb)"
    )


def _looks_like_structure(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head[:2] == b"\x1f\x8b" or head.lstrip().startswith(
        (b"data_", b"HEADER", b"ATOM  ", b"HETATM", b"CRYST1")
    )


#: header cells that name the structure file in a label file (a manifest)
_PATH_COLUMNS = ("path", "file", "filename", "file_name", "structure", "structure_file", "pdb_file")
#: header cells that a label file has beside its path column
_LABEL_COLUMNS = ("chain", "label", "split", "class", "pdb_chain", "group", "id")


def label_file_columns(path: str | os.PathLike[str]) -> list[str] | None:
    """The header of ``path`` when it looks like a label file (a CSV/TSV manifest for
    ``protsteps finetune``) rather than a list of paths: a first line of tab- or
    comma-separated cells, one naming the structure file (``path``, ``file``, ...) and
    another a chain, label, split or class column (``scop2_class``, ``ec_number`` ...)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
        text = head.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    delimiter = "\t" if "\t" in first else "," if "," in first else None
    if delimiter is None:
        return None
    cells = [c.strip().strip('"') for c in first.split(delimiter)]
    lowered = [c.lower() for c in cells]
    if len(cells) < 2 or not any(c in _PATH_COLUMNS for c in lowered):
        return None
    labelled = any(
        c in _LABEL_COLUMNS or c.endswith(("_class", "_label", "label", "_number", "_split")) for c in lowered
    )
    return cells if labelled else None


def label_file_message(path: str | os.PathLike[str], columns: Sequence[str], command: str = "") -> str:
    """What to say about a label file given where structures are expected."""
    shown = ", ".join(columns[:6]) + (", ..." if len(columns) > 6 else "")
    who = f"{command} takes" if command else "give"
    return (
        f"{path}: this looks like a label file (columns: {shown}); {who} structure files, folders "
        "or path lists (one path per line); labels are for protsteps finetune"
    )


def refuse_label_files(inputs: Iterable[str | os.PathLike[str]], command: str) -> None:
    """Raise a :class:`ProtstepsError` when one of ``inputs`` is a label file (see
    :func:`label_file_columns`), before any work: ``command`` names what was run."""
    for item in inputs:
        path, selection = split_selection(os.fspath(item))
        if selection is None and path.is_file() and not is_structure_path(path):
            columns = label_file_columns(path)
            if columns is not None:
                raise ProtstepsError(label_file_message(path, columns, command))


def _is_path_list(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Worker state: set once per process by _init_worker (or in-process for one worker).
_STATE: dict[str, Any] = {}


def _init_worker(
    spec: FeaturizerSpec,
    cache_root: str,
    reader: Reader,
    threads: int,
    refresh: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    store: GraphStore | None = None,
) -> None:
    """``store``: the calling process's own store object, when it featurizes in process
    (one index connection instead of two)."""
    if threads:
        torch.set_num_threads(threads)
    _STATE.update(
        spec=spec,
        identity=spec.identity(),
        featurizer=spec.build(),
        cache=store if store is not None else GraphStore(cache_root),
        reader=reader,
        refresh=refresh,
        max_bytes=max_bytes,
    )


def _label(item: str | Item) -> str:
    return item if isinstance(item, str) else item.spec


def _process(item: str | Item) -> FileResult:
    """Featurize one input (a file spec, or a member read out of a container) unless the
    store holds it; never raises for a bad file. A new result comes back with its encoded
    record, which the calling process writes to the store."""
    spec_text = _label(item)
    try:
        return _process_unguarded(item)
    except StructureError as exc:
        return FileResult(spec_text, [], [str(exc)])
    except MemoryError:
        return FileResult(spec_text, [], [f"{spec_text}: out of memory while featurizing"])
    except Exception as exc:
        return FileResult(
            spec_text, [], [f"{spec_text}: unexpected error while featurizing: {type(exc).__name__}: {exc}"]
        )


def _item_key(
    item: str | Item, content: str, split: tuple[Path, tuple[str, ...] | None] | None = None
) -> str:
    """The file key of an input whose bytes hash to ``content`` (``split``: its
    :func:`split_selection`, when the caller has it)."""
    file, selection = split if split is not None else split_selection(_label(item))
    names = name_rules(file) if isinstance(item, str) else item_name_rules(item)
    return file_key(content, _STATE["identity"], selection, _STATE["reader"], names)


def _process_unguarded(item: str | Item) -> FileResult:
    from .structure._io import read_bytes

    store: GraphStore = _STATE["cache"]
    spec_text = _label(item)
    file, selection = split_selection(spec_text)
    max_bytes = _STATE.get("max_bytes", DEFAULT_MAX_BYTES)
    data = read_bytes(file, max_bytes) if isinstance(item, str) else item.data
    content = hashlib.sha256(data).hexdigest()
    key = _item_key(item, content, (file, selection))
    damaged = store.damaged
    row = None if _STATE.get("refresh") else store.verify(key)
    if row is not None:
        return _from_row(spec_text, key, row, content)
    if not isinstance(item, str):
        data = decode_item(item)
    try:
        graphs, errors = _featurize_bytes(
            _STATE["featurizer"], file, data, selection, _STATE["reader"], max_bytes
        )
    except SizeLimitError as exc:  # depends on the limit, not only on the bytes: not stored
        return FileResult(spec_text, [], [str(exc)], key=key, content=content)
    except StructureError as exc:
        graphs, errors = [], [str(exc)]
    rows = [
        {"source": spec_text, "chain": g.chain_id, "residues": g.num_nodes, "key": chain_key(key, g.chain_id)}
        for g in graphs
    ]
    return FileResult(
        spec_text,
        rows,
        errors,
        damaged=store.damaged > damaged,
        key=key,
        content=content,
        record=encode_record(str(file), graphs, errors),
    )


def _from_row(spec_text: str, key: str, row: IndexRow, content: str = "") -> FileResult:
    # The record may have been made from another copy of the same bytes: name this one.
    old, new = row.source, str(split_selection(spec_text)[0])
    errors = [e.replace(old, new) if old else e for e in row.errors]
    rows = [
        {"source": spec_text, "chain": chain, "residues": residues, "key": chain_key(key, chain)}
        for chain, residues in row.chains
    ]
    return FileResult(spec_text, rows, errors, cached=True, key=key, content=content)


class _MainSide:
    """What the calling process does around the workers: answer inputs the store already
    holds without a worker (an unchanged file's hash comes from the store's input memo, so
    the file is not even read), write the records workers send back, remember file hashes."""

    def __init__(self, store: GraphStore, refresh: bool) -> None:
        self.store, self.refresh = store, refresh
        self.stats: dict[str, tuple[Path, tuple[int, int, int, int] | None]] = {}
        self.damaged: set[str] = set()

    def answer(self, item: str | Item) -> FileResult | None:
        label = _label(item)
        split = None
        if isinstance(item, str):
            split = split_selection(item)
            content, signature = self.store.known_hash(split[0])
            self.stats[label] = (split[0], signature)
        else:
            content = hashlib.sha256(item.data).hexdigest()
        if self.refresh or content is None:
            return None
        key = _item_key(item, content, split)
        damaged = self.store.damaged
        row = self.store.verify(key)
        if self.store.damaged > damaged:
            self.damaged.add(label)
        return _from_row(label, key, row, content) if row is not None else None

    def keep(self, result: FileResult) -> None:
        result.damaged = result.damaged or result.source in self.damaged
        stat = self.stats.pop(result.source, None)
        if stat is not None and result.content:
            self.store.remember_hash(stat[0], stat[1], result.content)
        if result.record is not None:
            chains = [[row["chain"], row["residues"]] for row in result.ok]
            # (the file as answer() split it from this very spec, else split here)
            source = str(stat[0] if stat is not None else split_selection(result.source)[0])
            self.store.put(result.key, result.record, chains, result.errors, source)
            result.record = None


def featurize_many(
    inputs: Iterable[str | os.PathLike[str]],
    featurizer: str = "residue_graph",
    config: Mapping[str, Any] | Any = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    reader: Reader = "columnar",
    on_result: Callable[[FileResult], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    refresh: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    shard: tuple[int, int] | None = None,
) -> FeaturizeReport:
    """Featurize every structure of ``inputs`` through the cache.

    Parameters
    ----------
    inputs:
        Files (``path:CHAIN`` selects chains), folders (searched recursively for
        ``.pdb/.ent/.cif/.mmcif/.bcif(.gz)``) and text files listing such paths.
    featurizer, config:
        A registered featurizer and its settings (mapping or config dataclass).
    cache_dir:
        Where graphs are stored (default :func:`default_cache_dir`).
    workers:
        Processes that featurize in parallel; 1 works in this process.
    on_total, on_result:
        Progress callbacks: the number of structure files once known, then each file's
        :class:`FileResult` as it completes.
    refresh:
        Featurize every input again and overwrite its cache entry, whatever is cached.
    max_bytes:
        The largest file, or gunzipped content, read (default 1 GiB); a larger one is a
        ``failed`` row, so that a gzip bomb costs at most this much memory.
    shard:
        ``(index, count)``: featurize only this process's share of the inputs, those whose
        name hashes to ``index`` modulo ``count`` (SLURM array tasks, torchrun ranks); the
        report holds that share. Inputs that are not structures are reported by shard 0.

    Returns
    -------
    A :class:`FeaturizeReport`; bad inputs are ``failed`` rows, never exceptions.
    """
    spec = FeaturizerSpec.create(featurizer, config)
    cache = GraphCache(cache_dir)
    cache.check_writable()
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ProtstepsError(f"shard {shard[0]}/{shard[1]}: the index must be in 0..count-1")
    specs, failed_inputs = expand_inputs(inputs)
    if shard is not None and shard[0] != 0:
        failed_inputs = []
    plan = _WorkPlan(specs, shard)
    if on_total is not None:
        on_total(plan.total() + len(failed_inputs))
    for row in failed_inputs:
        if on_result is not None:
            on_result(FileResult(row["source"], [], [row["error"]]))
    results: dict[str, FileResult] = {}

    def record(result: FileResult) -> None:
        results[result.source] = result
        if on_result is not None:
            on_result(result)

    main = _MainSide(cache, refresh)
    _STATE.update(identity=spec.identity(), reader=reader)  # what _MainSide.answer needs to make keys

    def kept(result: FileResult) -> None:
        main.keep(result)
        record(result)

    def misses() -> Iterator[str | Item]:
        for item in plan.items():
            answered = main.answer(item)
            if answered is None:
                yield item
            else:
                kept(answered)

    try:
        # FoldComp records are decompressed by a C library that can crash on a damaged one:
        # always in a worker process, so that the crash costs that record, not the run
        foldcomp = any(container_kind(c) == "foldcomp" for c in plan.containers)
        if not foldcomp and (workers <= 1 or (len(specs) <= 1 and not plan.containers)):
            _init_worker(
                spec, str(cache.root), reader, threads=0, refresh=refresh, max_bytes=max_bytes, store=cache
            )
            for item in misses():
                kept(_process(item))
        else:
            initargs = (spec, str(cache.root), reader, 1, refresh, max_bytes)
            # a few files per task, and still several tasks per worker so that they end together
            chunk = max(1, min(16, plan.total() // (8 * workers)))
            run_in_processes(misses(), _process, _init_worker, initargs, max(1, workers), kept, chunk)
    finally:
        cache.flush()

    ok: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = list(failed_inputs)
    for label in plan.labels:
        result = results[label]
        ok.extend(result.ok)
        failed.extend({"source": label, "error": error} for error in result.errors)
    return FeaturizeReport(
        featurizer=spec.name,
        config=spec.config_dict(),
        cache_dir=cache.root,
        ok=ok,
        failed=failed,
        skipped=[{"source": s.source, "reason": s.reason} for s in plan.skipped],
        files=len(plan.labels) + len(failed_inputs),
        cache_hits=sum(1 for r in results.values() if r.cached),
        cache_damaged=sum(1 for r in results.values() if r.damaged),
    )


class _WorkPlan:
    """The inputs in order, containers opened lazily: :meth:`items` yields file specs and
    the :class:`~protsteps.sources.Item` of each member, recording every label (for the
    report's order) and the members skipped."""

    def __init__(self, specs: Sequence[str], shard: tuple[int, int] | None = None) -> None:
        self.shard = shard
        # members named one by one (CONTAINER::MEMBER) are read in one pass per container,
        # where the container is first named
        self.order: list[tuple[str, str | None]] = []  # (spec, None) or (container, "")
        self.wanted: dict[str, dict[str, str] | None] = {}
        for item in specs:
            container, member = split_member(item)
            if member is None and container_kind(split_selection(item)[0]) is None:
                self.order.append((item, None))
                continue
            if container not in self.wanted:
                self.order.append((container, ""))
                self.wanted[container] = {}
            selected = self.wanted[container]
            if member is None:
                self.wanted[container] = None  # the whole container
            elif selected is not None:
                name, chains = split_member_selection(member)
                selected[name] = chains
        self.containers = list(self.wanted)
        self.labels: list[str] = []
        self.skipped: list[Skipped] = []
        self._total: int | None = None

    def total(self) -> int:
        if self._total is None:
            plain = sum(1 for name, kind in self.order if kind is None and self.mine(name))
            members = sum(count_members(c, self.wanted[c]) for c in self.containers)
            self._total = plain + (members if self.shard is None else -(-members // self.shard[1]))
        return self._total

    def mine(self, label: str) -> bool:
        """Whether this process featurizes ``label`` (``shard = (index, count)``: the inputs
        whose label hashes to ``index`` modulo ``count``, whatever else is in the run)."""
        if self.shard is None:
            return True
        index, count = self.shard
        return zlib.crc32(label.encode("utf-8", "surrogateescape")) % count == index

    def items(self) -> Iterator[str | Item]:
        for name, kind in self.order:
            if kind is None:
                if self.mine(name):
                    self.labels.append(name)
                    yield name
                continue
            try:
                for member in iterate_members(name, self.wanted[name]):
                    if not self.mine(member.spec if isinstance(member, Item) else member.source):
                        continue
                    if isinstance(member, Skipped):
                        self.skipped.append(member)
                    else:
                        self.labels.append(member.spec)
                        yield member
            except ProtstepsError as exc:
                self.skipped.append(Skipped(name, str(exc)))


def _start_method() -> str:
    """How worker processes start: ``fork`` on Linux, so that a worker begins with torch and
    the plugins already imported (a spawned one spends seconds importing them, longer than
    featurizing a few hundred files); ``spawn`` elsewhere, or when
    ``PROTSTEPS_WORKER_START=spawn`` asks for it. Workers use one torch thread, as a
    DataLoader's forked workers do."""
    wanted = os.environ.get("PROTSTEPS_WORKER_START", "").strip().lower()
    if wanted in ("spawn", "fork", "forkserver"):
        return wanted
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _work_chunk(work: Callable[[Any], FileResult], items: Sequence[Any]) -> list[FileResult]:
    """``work`` on several items in one task, so that what a task costs the calling process
    (submitting it, receiving its results) is shared among them."""
    return [work(item) for item in items]


def run_in_processes(
    items: Iterable[Any],
    work: Callable[[Any], FileResult],
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    workers: int,
    record: Callable[[FileResult], None],
    chunk: int = 1,
) -> None:
    """``record(work(item))`` for every item (taken from ``items`` as workers free up, so
    a generator is read lazily), in ``workers`` worker processes (forked where the platform
    allows, see :func:`_start_method`), ``chunk`` items per task.

    At most ``2 * workers`` tasks are in flight at once, so when a worker dies (killed for
    memory, say) and breaks the pool, the suspects are those few: each item is retried alone
    in a fresh process, the one that kills its process again is reported as failed, and the
    rest go on in a new pool.
    """
    context = multiprocessing.get_context(_start_method())

    def pool(size: int) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=size, mp_context=context, initializer=initializer, initargs=initargs
        )

    pending = iter(items)

    def take() -> list[Any] | None:
        batch = list(itertools.islice(pending, chunk))
        return batch or None

    upcoming = take()
    while upcoming is not None:
        suspects: list[Any] = []
        with pool(workers) as executor:
            in_flight: dict[concurrent.futures.Future[list[FileResult]], list[Any]] = {}
            while (upcoming is not None or in_flight) and not suspects:
                while upcoming is not None and len(in_flight) < 2 * workers:
                    in_flight[executor.submit(_work_chunk, work, upcoming)] = upcoming
                    upcoming = take()
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    batch = in_flight.pop(future)
                    try:
                        results = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        suspects.extend(batch)
                        continue
                    for result in results:
                        record(result)
            for batch in in_flight.values():
                suspects.extend(batch)
        for item in suspects:
            label = _label(item)
            with pool(1) as alone:
                try:
                    record(alone.submit(work, item).result())
                except concurrent.futures.process.BrokenProcessPool:
                    record(
                        FileResult(
                            label,
                            [],
                            [f"{label}: the worker process died while featurizing it (out of memory?)"],
                        )
                    )
