"""The graph store: featurized chains in shard files, found through an SQLite index.

Layout of a store folder (``--cache-dir``)::

    index.sqlite            entries: key -> shard, offset, length, SHA-256, chains, errors
                            inputs:  path, size, mtime, ctime, inode -> SHA-256 of the bytes
    shards/<name>.pgs       records, one per featurized input, back to back

A **record** is one input's result: the chains it gave (each a
:class:`~protsteps.ProteinGraph`) and the reasons for what it could not give. It is a
small JSON header followed by each tensor's raw bytes (8-byte aligned)::

    b"PSG1" | u32 header length | header JSON | padding | tensor bytes ...

so reading a graph back is one slice of a memory-mapped shard, one checksum, one JSON parse
and ``torch.frombuffer`` per field: no pickle, nothing executed. The index row of a record
holds what a report needs (chain ids, residue counts, errors), so a featurize over inputs
already in the store reads no graph at all, and the ``inputs`` table (keyed by a file's
path, size, times and inode) spares it from reading and hashing unchanged files again.

Writes: records are appended to a shard open in this process (``*.pgs.tmp``); a shard is
committed (renamed, then its rows inserted in one transaction) when it reaches
:data:`SHARD_RECORDS` records or :data:`SHARD_BYTES` bytes, after :data:`SHARD_SECONDS`, and
on :meth:`GraphStore.flush`. A killed process loses at most its open shard; what was
committed stays. Several processes (``torchrun`` ranks, SLURM array tasks) may write one
store at once: each writes its own shards, and SQLite serialises the index updates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import os
import sqlite3
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ProtstepsError, RunFailure
from .files import writable_folder
from .graph import (
    _EDGE_FIELDS,
    _NODE_FIELDS,
    Batch,
    PackedBatch,
    ProteinGraph,
    _edge_geometry,
    made_by_edge_geometry,
)
from .graph import edge_geometry_into as _edge_geometry_into

__all__ = [
    "GraphStore",
    "IndexRow",
    "SHARD_BYTES",
    "SHARD_RECORDS",
    "SHARD_SECONDS",
    "decode_record",
    "encode_record",
]

#: commit a shard after this many records, bytes or seconds, whichever comes first
SHARD_RECORDS = 4096
SHARD_BYTES = 256 << 20
SHARD_SECONDS = 60.0
#: shards kept memory-mapped at once by one reading process
OPEN_SHARDS = 64
#: index connections a forked process inherited from its parent, kept from being closed
_INHERITED: list[sqlite3.Connection] = []

_MAGIC = b"PSG1"
_HOST = "".join(c if c.isalnum() or c == "-" else "_" for c in os.uname().nodename) or "host"
_STRINGS = ("source", "chain_id", "sequence")
_DTYPES = {
    str(t).removeprefix("torch."): t
    for t in (
        torch.float32,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.bool,
        torch.float16,
        torch.bfloat16,
        torch.uint8,
    )
}
_SIZES = {t: torch.empty((), dtype=t).element_size() for t in _DTYPES.values()}
_NAME_OF = {t: name for name, t in _DTYPES.items()}
_NUMPY_OF = {t: np.dtype(name) for name, t in _DTYPES.items() if t != torch.bfloat16}
#: integer tensors are stored in the narrowest of these that holds their values exactly
_NARROW = (torch.uint8, torch.int8, torch.int16, torch.int32)
#: edge fields that are stored only when recomputing them from pos and edge_index would not
#: give the same bits (see :func:`protsteps.graph.edge_geometry`)
_DERIVED = ("edge_distance", "edge_vector")
#: the batch read (:meth:`GraphStore.read_packed`): the dtypes it copies with numpy (a field of
#: another dtype sends its batch down the chain-by-chain path), the integer types a stored
#: integer may widen to, a chain's tensor fields, and a batch's tensors in Batch's order
_NUMPY = {
    name: np.dtype(kind)
    for name, kind in (
        ("float32", np.float32),
        ("float64", np.float64),
        ("float16", np.float16),
        ("int64", np.int64),
        ("int32", np.int32),
        ("int16", np.int16),
        ("int8", np.int8),
        ("uint8", np.uint8),
        ("bool", np.bool_),
    )
}
_INTEGERS = ("int64", "int32", "int16", "int8", "uint8")
#: (dtype, stored dtype) -> the numpy dtype read: the same dtype, or an integer widened
_READABLE = {(name, name): kind for name, kind in _NUMPY.items()} | {
    (wide, narrow): _NUMPY[narrow]
    for wide in _INTEGERS
    for narrow in _INTEGERS
    if wide != narrow and np.can_cast(_NUMPY[narrow], _NUMPY[wide], "safe")
}
_CHAIN_FIELDS = (*_NODE_FIELDS, "edge_index", *_EDGE_FIELDS)
_CHAIN_FIELD_SET = frozenset(_CHAIN_FIELDS)
_RECOMPUTED_KEEPS = _CHAIN_FIELD_SET - set(_DERIVED)
_BATCH_TENSORS = tuple(
    f.name for f in dataclasses.fields(Batch) if f.name not in ("sequences", "sources", "chain_ids")
)
#: the shapes of node and edge fields after their first dimension (node_attr and edge_attr:
#: the chains' shared width)
_NODE_REST: dict[str, tuple[int, ...]] = {
    "residue_type": (),
    "residue_number": (),
    "pos": (3,),
    "backbone": (4, 3),
    "backbone_mask": (4,),
    "dihedrals": (3,),
    "dihedral_mask": (3,),
    "node_attr": (),
}
_EDGE_REST: dict[str, tuple[int, ...]] = {"edge_distance": (), "edge_vector": (3,), "edge_attr": ()}


#: the range of each type in ``_NARROW``, in the same order
_NARROW_RANGES = tuple((int(torch.iinfo(t).min), int(torch.iinfo(t).max), t) for t in _NARROW)


def _narrowest_of(array: np.ndarray, dtype: torch.dtype) -> torch.dtype:
    """The narrowest of ``_NARROW`` that holds every value of ``array`` (an int32/int64
    tensor's non-empty numpy view), else ``dtype``."""
    low, high = int(array.min()), int(array.max())
    for smallest, largest, narrow in _NARROW_RANGES:
        if smallest <= low and high <= largest:
            return narrow
    return dtype


def _derived_geometry(values: dict[str, Any]) -> bool:
    """Whether recomputing the graph's edge distances and directions from ``pos`` and
    ``edge_index`` (:func:`protsteps.graph.edge_geometry`) gives their very bits, so that they can be left
    out of its record (a ``ProteinGraph``'s shapes are checked when it is made)."""
    distance, vector = values["edge_distance"], values["edge_vector"]
    if distance.dtype != torch.float32 or vector.dtype != torch.float32:
        return False
    if made_by_edge_geometry(values["pos"], values["edge_index"], distance, vector):
        return True  # made by the very computation that would check them
    again, again_vector = _edge_geometry(values["pos"], values["edge_index"])
    # compared as bits: the same bits come back (-0.0 and 0.0 differ; a NaN equals itself)
    return torch.equal(again.view(torch.int32), distance.detach().cpu().view(torch.int32)) and torch.equal(
        again_vector.view(torch.int32), vector.detach().cpu().view(torch.int32)
    )


def encode_record(source: str, graphs: Sequence[ProteinGraph], errors: Sequence[str]) -> bytes:
    """One input's result as record bytes (see the module docs). Lossless: integers are
    stored in the narrowest type that holds them, and edge distances and directions are
    left out when recomputing them from the positions gives the very same bits."""
    blobs: list[bytes] = []
    offset = 0
    chains = []
    for graph in graphs:
        fields: dict[str, list[Any]] = {}
        values = graph.to_dict()
        derived = list(_DERIVED) if _derived_geometry(values) else []
        for name, value in values.items():
            if name in _STRINGS or name in derived:
                continue
            # (attributes read in a tenth of the time of detach() and device.type)
            tensor = value.detach() if value.requires_grad else value
            if not tensor.is_cpu:
                tensor = tensor.cpu()
            dtype = tensor.dtype
            stored = dtype
            if dtype == torch.bfloat16:
                data = tensor.contiguous().view(torch.int16).numpy().tobytes()
            else:
                array = tensor.numpy()
                if dtype in (torch.int64, torch.int32) and array.size:
                    stored = _narrowest_of(array, dtype)
                    if stored != dtype:
                        array = array.astype(_NUMPY_OF[stored])
                data = array.tobytes()  # C order, whatever the tensor's strides
            pad = (-offset) % 8
            if pad:
                blobs.append(b"\0" * pad)
                offset += pad
            field = [_NAME_OF[dtype], list(tensor.shape), offset, len(data)]
            if stored != dtype:
                field.append(_NAME_OF[stored])
            fields[name] = field
            blobs.append(data)
            offset += len(data)
        chain = {
            "chain": graph.chain_id,
            "residues": graph.num_nodes,
            "sequence": graph.sequence,
            "source": graph.source,
            "fields": fields,
        }
        if derived:
            chain["derived"] = derived
        chains.append(chain)
    header = json.dumps(
        {"source": source, "errors": list(errors), "chains": chains}, separators=(",", ":")
    ).encode()
    head = _MAGIC + struct.pack("<I", len(header)) + header
    head += b"\0" * ((-len(head)) % 8)
    return head + b"".join(blobs)


def decode_record(
    record: bytes | bytearray | memoryview, what: str = "record", only: str | None = None
) -> dict[str, Any]:
    """The entry in record bytes: ``{"source", "errors", "chains": [{"chain", "residues",
    "graph"}]}`` with each ``graph`` a :class:`~protsteps.ProteinGraph`'s dict; with
    ``only``, just that chain's (the others' tensors are not decoded). Raises
    ``ValueError`` naming ``what`` when the bytes are not a record."""
    view = memoryview(record)
    if bytes(view[:4]) != _MAGIC or len(view) < 8:
        raise ValueError(f"{what}: not a protsteps graph record")
    (length,) = struct.unpack("<I", view[4:8])
    header = json.loads(bytes(view[8 : 8 + length]))
    start = 8 + length
    start += (-start) % 8
    buffer = bytearray(view[start:])  # one writable copy the tensors share
    chains = []
    for chain in header["chains"]:
        if only is not None and chain["chain"] != only:
            continue
        graph: dict[str, Any] = {
            "source": chain["source"],
            "chain_id": chain["chain"],
            "sequence": chain["sequence"],
        }
        for name, (dtype, shape, offset, nbytes, *stored) in chain["fields"].items():
            if offset + nbytes > len(buffer):
                raise ValueError(f"{what}: field {name} lies beyond the record's end")
            target = _DTYPES[dtype]
            kind = _DTYPES[stored[0]] if stored else target
            if nbytes == 0:
                graph[name] = torch.zeros(shape, dtype=target)
                continue
            if kind == torch.bfloat16:
                tensor = torch.frombuffer(buffer, dtype=torch.int16, count=nbytes // 2, offset=offset).view(
                    torch.bfloat16
                )
            else:
                tensor = torch.frombuffer(buffer, dtype=kind, count=nbytes // _SIZES[kind], offset=offset)
            tensor = tensor.reshape(shape)
            graph[name] = tensor.to(target) if kind != target else tensor
        if chain.get("derived"):
            graph["edge_distance"], graph["edge_vector"] = _edge_geometry(graph["pos"], graph["edge_index"])
        chains.append({"chain": chain["chain"], "residues": chain["residues"], "graph": graph})
    return {"source": header["source"], "errors": header["errors"], "chains": chains}


def _assemble(
    wanted: Sequence[tuple[tuple[bytes, int, dict[str, dict[str, Any]]], str]],
) -> PackedBatch | None:
    """The packed batch of ``(record, payload start, chains by id), chain id`` pairs (see
    :meth:`GraphStore.read_packed`), or ``None`` when a chain is missing, is not what
    ``decode_record`` and ``ProteinGraph`` take without complaint, or differs from the
    batch's first chain where ``collate`` would promote a dtype or refuse."""
    # per chain: its record, what to copy from it ((field, stored numpy dtype, start, bytes,
    # elements)),
    # and whether its edge geometry is recomputed
    plans: list[tuple[bytes, list[tuple[str, np.dtype, int, int, int]], bool]] = []
    nodes: list[int] = []
    edges: list[int] = []
    sequences: list[str] = []
    sources: list[str] = []
    chain_ids: list[str] = []
    first: tuple[dict[str, str], int, int] | None = None  # the dtypes and widths all must share
    for (record, start, chains), chain_id in wanted:
        chain = chains.get(chain_id)
        if chain is None:
            return None
        sequence = chain["sequence"]
        n = len(sequence)
        derived = bool(chain.get("derived"))
        dtypes: dict[str, str] = {}
        shapes: dict[str, list[int]] = {}
        copies: list[tuple[str, np.dtype, int, int, int]] = []
        kept = _RECOMPUTED_KEEPS if derived else _CHAIN_FIELD_SET
        room = len(record) - start
        for name, (dtype, shape, offset, nbytes, *stored) in chain["fields"].items():
            kind = _READABLE.get((dtype, stored[0] if stored else dtype))
            # (np.frombuffer refuses bytes beyond the record's end)
            if (
                kind is None
                or offset < 0
                or offset + nbytes > room
                or nbytes != math.prod(shape) * kind.itemsize
            ):
                return None
            if name in kept:
                dtypes[name] = dtype
                shapes[name] = shape
                if nbytes:
                    copies.append((name, kind, start + offset, nbytes, nbytes // kind.itemsize))
            elif min(shape, default=0) < 0:  # (ProteinGraph fields' shapes are checked below)
                return None  # decode_record would fail on it
        if derived:
            dtypes["edge_distance"] = dtypes["edge_vector"] = "float32"
            shapes["edge_distance"] = shapes["edge_index"][1:]
            shapes["edge_vector"] = [*shapes["edge_index"][1:], 3]
        if len(shapes) != len(_CHAIN_FIELDS):
            return None
        # the shapes ProteinGraph.validate asks for
        index = shapes["edge_index"]
        if len(index) != 2 or index[0] != 2:
            return None
        e = index[1]
        node_attr, edge_attr = shapes["node_attr"], shapes["edge_attr"]
        if (
            e < 0
            or shapes["residue_type"] != [n]
            or shapes["residue_number"] != [n]
            or shapes["pos"] != [n, 3]
            or shapes["backbone"] != [n, 4, 3]
            or shapes["backbone_mask"] != [n, 4]
            or shapes["dihedrals"] != [n, 3]
            or shapes["dihedral_mask"] != [n, 3]
            or shapes["edge_distance"] != [e]
            or shapes["edge_vector"] != [e, 3]
            or len(node_attr) != 2
            or node_attr[0] != n
            or node_attr[1] < 0
            or len(edge_attr) != 2
            or edge_attr[0] != e
            or edge_attr[1] < 0
        ):
            return None
        signature = (dtypes, node_attr[1], edge_attr[1])
        if first is None:
            first = signature
            if dtypes["edge_index"] != "int64":
                return None  # collate's sum with the int64 offsets would keep a narrower type
        elif signature != first:
            return None
        plans.append((record, copies, derived))
        nodes.append(n)
        edges.append(e)
        sequences.append(sequence)
        sources.append(chain["source"])
        chain_ids.append(chain["chain"])
    if first is None:
        return None
    dtype_of = dict(first[0])
    total_nodes, total_edges, graphs = sum(nodes), sum(edges), len(plans)
    shape_of = {name: (total_nodes, *_NODE_REST[name]) for name in _NODE_FIELDS}
    shape_of.update({name: (total_edges, *_EDGE_REST[name]) for name in _EDGE_FIELDS})
    shape_of["node_attr"] = (total_nodes, first[1])
    shape_of["edge_attr"] = (total_edges, first[2])
    shape_of.update(
        edge_index=(2, total_edges),
        batch=(total_nodes,),
        ptr=(graphs + 1,),
        edge_ptr=(graphs + 1,),
        dihedral_input_mask=shape_of["dihedral_mask"],
    )
    dtype_of.update(
        batch="int64", ptr="int64", edge_ptr="int64", dihedral_input_mask=dtype_of["dihedral_mask"]
    )
    buffer, layout = PackedBatch.allocate(
        [(name, _DTYPES[dtype_of[name]], shape_of[name]) for name in _BATCH_TENSORS]
    )
    whole = buffer.numpy()
    out = {
        name: whole[begin : begin + size].view(_NUMPY[dtype_of[name]]).reshape(shape)
        for name, _, shape, begin, size in layout
    }
    flat = {name: out[name].reshape(-1) for name in _CHAIN_FIELDS}
    width = {name: math.prod(shape_of[name][1:]) for name in _CHAIN_FIELDS}
    ptr, edge_ptr = out["ptr"], out["edge_ptr"]
    ptr[0] = edge_ptr[0] = 0
    np.cumsum(nodes, out=ptr[1:])
    np.cumsum(edges, out=edge_ptr[1:])
    sources_index, targets_index = out["edge_index"]
    for (record, copies, derived), n0, n1, e0 in zip(
        plans, ptr.tolist(), ptr[1:].tolist(), edge_ptr.tolist(), strict=False
    ):
        raw = np.frombuffer(record, dtype=np.uint8)
        for name, kind, offset, nbytes, count in copies:
            values = raw[offset : offset + nbytes].view(kind)
            if name == "edge_index":
                half = count // 2
                if derived and (values.max() >= n1 - n0 or (kind.kind != "u" and values.min() < 0)):
                    # recomputing reads pos at each edge's ends: an edge outside its chain
                    # would read another chain's positions here (chain by chain it raises,
                    # or wraps around)
                    return None
                np.add(values[:half], n0, out=sources_index[e0 : e0 + half], dtype=np.int64)
                np.add(values[half:], n0, out=targets_index[e0 : e0 + half], dtype=np.int64)
            else:
                begin = (e0 if name in _EDGE_FIELDS else n0) * width[name]
                flat[name][begin : begin + count] = values
    derived_chains = [derived for _, _, derived in plans]
    if all(derived_chains):
        _edge_geometry_into(
            out["pos"], sources_index, targets_index, out["edge_distance"], out["edge_vector"]
        )
    elif any(derived_chains):
        distance = np.empty(total_edges, dtype=np.float32)
        vector = np.empty((total_edges, 3), dtype=np.float32)
        _edge_geometry_into(out["pos"], sources_index, targets_index, distance, vector)
        for derived, e0, e1 in zip(
            derived_chains, edge_ptr[:-1].tolist(), edge_ptr[1:].tolist(), strict=True
        ):
            if derived:
                out["edge_distance"][e0:e1] = distance[e0:e1]
                out["edge_vector"][e0:e1] = vector[e0:e1]
    out["batch"][...] = np.repeat(np.arange(graphs, dtype=np.int64), nodes)
    out["dihedral_input_mask"][...] = out["dihedral_mask"]
    return PackedBatch(buffer, layout, sequences, sources, chain_ids)


class IndexRow:
    """What the index knows of one record, without reading it."""

    __slots__ = ("chains", "errors", "key", "length", "offset", "sha256", "shard", "source")

    def __init__(
        self,
        key: str,
        shard: str,
        offset: int,
        length: int,
        sha256: str,
        chains: str,
        errors: str,
        source: str,
    ) -> None:
        self.key, self.shard, self.offset, self.length, self.sha256 = key, shard, offset, length, sha256
        self.chains: list[list[Any]] = json.loads(chains)  # [[chain id, residues], ...]
        self.errors: list[str] = json.loads(errors)
        self.source = source


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, shard TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    sha256 TEXT NOT NULL, chains TEXT NOT NULL, errors TEXT NOT NULL, source TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inputs (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, sha256 TEXT NOT NULL
) WITHOUT ROWID;
"""


class _OpenShard:
    def __init__(self, folder: Path) -> None:
        self.name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.pgs"
        self.temporary = folder / f"{self.name}.{_HOST}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self.handle = os.fdopen(os.open(self.temporary, flags, 0o666), "wb")
        self.size = 0
        self.rows: list[tuple[str, str, int, int, str, str, str, str]] = []
        self.started = time.monotonic()


class GraphStore:
    """Featurized chains on disk, addressed by content (see the module docs).

    ``load_entry``/``store_entry``/``load_graph`` address inputs by their *file key* and
    chains by ``<file key>:<chain id>``. A record whose bytes do not match the SHA-256 in the
    index is a miss (:attr:`damaged` counts it) and is rebuilt by the next featurize.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        from .featurize import default_cache_dir

        self.root = Path(root) if root else default_cache_dir()
        self.shards = self.root / "shards"
        #: records found damaged (checksum mismatch, unreadable shard) by this object
        self.damaged = 0
        self._connection: sqlite3.Connection | None = None
        self._pid = -1
        self._maps: OrderedDict[str, tuple[Any, mmap.mmap]] = OrderedDict()
        self._open: _OpenShard | None = None
        self._memo: list[tuple[str, int, int, int, int, str]] = []

    # ------------------------------------------------------------------ set-up

    def check_writable(self) -> None:
        """Create the store, or refuse in one line a folder that cannot be created or written."""
        for folder in (self.root, self.shards):
            writable_folder(folder, f"cache folder {folder}", "pass --cache-dir with a folder you can write")
        self._db()
        self._remove_dead_temporaries()

    def _db(self) -> sqlite3.Connection:
        # one connection per process: a connection must not cross a fork (DataLoader workers)
        if self._connection is None or self._pid != os.getpid():
            if self._connection is not None:
                # a connection inherited through fork (a DataLoader worker) must not be used or
                # closed here (SQLite: never carry a connection across fork); keep it unclosed
                _INHERITED.append(self._connection)
            self._maps = OrderedDict()
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                index = self.root / "index.sqlite"
                try:  # created here, so that it gets 0o666 less the umask as any file would (a
                    # store shared by a group stays writable by it); SQLite would use 0o644
                    os.close(os.open(index, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                except FileExistsError:
                    pass
                connection = sqlite3.connect(index, timeout=120, isolation_level=None)
                # reads through a memory map and a larger page cache: a lookup per graph a
                # DataLoader worker reads
                connection.execute("PRAGMA mmap_size = 268435456")
                connection.execute("PRAGMA cache_size = -65536")
                connection.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise ProtstepsError(
                    f"{self.root / 'index.sqlite'}: cannot open the cache index ({exc}); delete it (the "
                    "cache is rebuilt on demand) or pass another --cache-dir"
                ) from None
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _remove_dead_temporaries(self) -> None:
        # shards a killed writer left open: <name>.pgs.<host>.<pid>.tmp, written on this host
        # by a process that is gone (a store on a shared file system may have writers elsewhere)
        for path in self.shards.glob(f"*.{_HOST}.*.tmp"):
            pid = path.name[: -len(".tmp")].rpartition(".")[2]
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def lookup(self, key: str) -> IndexRow | None:
        """The index row of a file key, or ``None``."""
        try:
            row = (
                self._db()
                .execute(
                    "SELECT key, shard, offset, length, sha256, chains, errors, source FROM entries WHERE key = ?",
                    (key.split(":", 1)[0],),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise ProtstepsError(
                f"{self.root / 'index.sqlite'}: the cache index cannot be read ({exc})"
            ) from None
        return IndexRow(*row) if row else None

    def _map(self, shard: str) -> mmap.mmap:
        found = self._maps.get(shard)
        if found is not None:
            self._maps.move_to_end(shard)
            return found[1]
        handle = open(self.shards / shard, "rb")
        try:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            handle.close()
            raise OSError(f"{shard} is empty") from None
        self._maps[shard] = (handle, view)
        while len(self._maps) > OPEN_SHARDS:
            _, (old_handle, old_view) = self._maps.popitem(last=False)
            old_view.close()
            old_handle.close()
        return view

    def read_record(self, row: IndexRow) -> bytes | None:
        """The record of an index row, checked against its SHA-256; ``None`` (and
        :attr:`damaged` goes up) when the shard is missing, short or the bytes differ."""
        try:
            view = self._map(row.shard)
            record = view[row.offset : row.offset + row.length]
        except OSError:
            self.damaged += 1
            return None
        if len(record) != row.length or hashlib.sha256(record).hexdigest() != row.sha256:
            self.damaged += 1
            return None
        return record

    def verify(self, key: str) -> IndexRow | None:
        """The index row of a file key when its record is intact, else ``None``."""
        row = self.lookup(key)
        if row is None or self.read_record(row) is None:
            return None
        return row

    def load_entry(self, key: str, only: str | None = None) -> dict[str, Any] | None:
        """The decoded record of a file key (``{"source", "errors", "chains": [{"chain",
        "residues", "graph"}]}``; with ``only``, that chain alone), or ``None`` when there is
        none or it is damaged."""
        row = self.lookup(key)
        if row is None:
            return None
        record = self.read_record(row)
        if record is None:
            return None
        try:
            return decode_record(record, f"{row.shard}@{row.offset}", only)
        except (ValueError, KeyError, TypeError, RuntimeError):
            self.damaged += 1
            return None

    def _rows(self, keys: Sequence[str]) -> dict[str, tuple[str, int, int, str]]:
        """``key -> (shard, offset, length, sha256)`` of the file keys found, in one query
        per 500 keys."""
        found: dict[str, tuple[str, int, int, str]] = {}
        try:
            connection = self._db()
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                query = (
                    "SELECT key, shard, offset, length, sha256 FROM entries WHERE key IN "
                    f"({', '.join('?' * len(part))})"
                )
                for key, *row in connection.execute(query, part):
                    found[key] = tuple(row)  # type: ignore[assignment]
        except sqlite3.Error as exc:
            raise ProtstepsError(
                f"{self.root / 'index.sqlite'}: the cache index cannot be read ({exc})"
            ) from None
        return found

    def read_packed(self, keys: Sequence[str]) -> PackedBatch | None:
        """The chains of ``keys`` (``<file key>:<chain id>``) as one packed batch: exactly
        ``collate_packed([self.load_graph(k) for k in keys])``, read a batch at a time. One
        index query for the batch; each record read and checked against its SHA-256 once;
        every chain's tensors copied from the record straight into the batch's buffer; the
        edge geometry records leave out computed for the whole batch at once (the same bits).

        ``None`` when some chain cannot be read this way: missing, damaged, or unlike the
        batch's others (a dtype, a feature width), so that :meth:`load_graph` chain by chain
        names the problem or :func:`~protsteps.graph.collate` does what it does with such graphs.
        """
        if not keys:
            return None
        split = [key.partition(":") for key in keys]
        files = list(dict.fromkeys(file for file, _, _ in split))
        rows = self._rows(files)
        records: dict[str, tuple[bytes, int, dict[str, dict[str, Any]]]] = {}
        for file in files:
            row = rows.get(file)
            if row is None:
                return None
            shard, offset, length, sha256 = row
            try:
                record = self._map(shard)[offset : offset + length]
            except OSError:
                return None
            if len(record) != length or hashlib.sha256(record).hexdigest() != sha256:
                return None  # load_graph counts it and says so
            try:
                if record[:4] != _MAGIC or len(record) < 8:
                    return None
                (size,) = struct.unpack_from("<I", record, 4)
                header = json.loads(record[8 : 8 + size].decode())
                start = 8 + size
                start += (-start) % 8
                chains: dict[str, dict[str, Any]] = {}
                for chain in header["chains"]:
                    chains.setdefault(chain["chain"], chain)
            except (ValueError, KeyError, TypeError, struct.error):
                return None
            records[file] = (record, start, chains)
        try:
            return _assemble([(records[file], chain) for file, _, chain in split])
        except (ValueError, KeyError, TypeError, IndexError):
            return None

    def load_graph(self, key: str) -> ProteinGraph:
        """The graph of a chain key (``<file key>:<chain id>``)."""
        file_key, _, chain_id = key.partition(":")
        entry = self.load_entry(file_key, only=chain_id)  # the file's other chains stay undecoded
        if entry is not None:
            for chain in entry["chains"]:
                if chain["chain"] == chain_id:
                    return ProteinGraph.from_dict(chain["graph"])
        state = "damaged in" if self.lookup(file_key) is not None else "missing from"
        raise ProtstepsError(
            f"cache entry {key} is {state} {self.root}; run protsteps featurize again to rebuild it"
        )

    # ------------------------------------------------------------------ input memo

    def known_hash(self, path: Path) -> tuple[str | None, tuple[int, int, int, int] | None]:
        """The SHA-256 recorded for ``path`` (by its absolute spelling) when its size, times
        and inode are unchanged, and the stat signature to record otherwise."""
        try:
            stat = path.stat()
        except OSError:
            return None, None
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        row = (
            self._db()
            .execute(
                "SELECT size, mtime_ns, ctime_ns, inode, sha256 FROM inputs WHERE path = ?",
                (os.path.abspath(path),),
            )
            .fetchone()
        )
        if row and tuple(row[:4]) == signature:
            return row[4], signature
        return None, signature

    def remember_hash(self, path: Path, signature: tuple[int, int, int, int] | None, sha256: str) -> None:
        """Record ``sha256`` for ``path`` (written with the next commit). A file changed in
        the last two seconds is not recorded: a change within the file system's time
        resolution could go unseen."""
        if signature is None or time.time_ns() - signature[1] < 2_000_000_000:
            return
        self._memo.append((os.path.abspath(path), *signature, sha256))

    # ------------------------------------------------------------------ writing

    def store_entry(
        self, key: str, source: str, graphs: Sequence[ProteinGraph], errors: Sequence[str]
    ) -> None:
        """Append one input's result (committed by :meth:`flush` or when the shard is full)."""
        self.put(
            key,
            encode_record(source, graphs, errors),
            [[g.chain_id, g.num_nodes] for g in graphs],
            errors,
            source,
        )

    def put(
        self, key: str, record: bytes, chains: Iterable[Sequence[Any]], errors: Sequence[str], source: str
    ) -> None:
        """Append an encoded record (see :func:`encode_record`)."""
        if self._open is None:
            self.check_writable()
            self._open = _OpenShard(self.shards)
        shard = self._open
        try:
            shard.handle.write(record)
        except OSError as exc:
            raise RunFailure(
                f"{self.shards}: cannot write the cache ({exc.strerror or exc}); free some space there, "
                "or pass --cache-dir with another folder"
            ) from None
        shard.rows.append(
            (
                key,
                shard.name,
                shard.size,
                len(record),
                hashlib.sha256(record).hexdigest(),
                json.dumps([list(c) for c in chains]),
                json.dumps(list(errors)),
                source,
            )
        )
        shard.size += len(record)
        if (
            len(shard.rows) >= SHARD_RECORDS
            or shard.size >= SHARD_BYTES
            or time.monotonic() - shard.started >= SHARD_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Commit the open shard and the remembered input hashes."""
        shard, self._open = self._open, None
        connection = self._db() if (shard is not None or self._memo) else None
        if connection is None:
            return
        try:
            if shard is not None:
                shard.handle.flush()
                os.fsync(shard.handle.fileno())
                shard.handle.close()
                os.replace(shard.temporary, self.shards / shard.name)
            connection.execute("BEGIN IMMEDIATE")
            if shard is not None:
                connection.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", shard.rows
                )
            connection.executemany("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?, ?, ?)", self._memo)
            connection.execute("COMMIT")
            self._memo = []
        except (OSError, sqlite3.Error) as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            # a full disk or a lost folder is the machine's failure (exit 1), not the input's
            raise RunFailure(
                f"{self.root}: cannot commit to the cache ({exc}); free some space there, or pass "
                "--cache-dir with another folder"
            ) from None

    def close(self) -> None:
        """Commit what is open and release the index and shard maps."""
        self.flush()
        for handle, view in self._maps.values():
            view.close()
            handle.close()
        self._maps.clear()
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    def __getstate__(self) -> dict[str, Any]:
        # what a DataLoader worker needs: the folder; it opens its own connection and maps
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    def counts(self) -> tuple[int, int]:
        """``(records, shards)`` in the index."""
        records, shards = self._db().execute("SELECT COUNT(*), COUNT(DISTINCT shard) FROM entries").fetchone()
        return int(records), int(shards)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
