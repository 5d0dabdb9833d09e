"""Residue graphs and batches of them.

A :class:`ProteinGraph` is one protein chain: one node per residue with a CA atom, in chain
order, and directed edges between residues. A :class:`Batch` concatenates graphs the way
graph libraries do (node and edge tensors stacked, edge indices offset, a ``batch`` vector
mapping each residue to its protein), so that a batch is itself one big disconnected graph.

Edge convention: ``edge_index[0]`` is the source ``j`` (the sender of a message),
``edge_index[1]`` the target ``i``; ``edge_vector`` is the unit vector from source to target
CA, ``(pos[i] - pos[j]) / |pos[i] - pos[j]|``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ALPHABET",
    "UNKNOWN_RESIDUE",
    "ProteinGraph",
    "Batch",
    "CollatedGraphs",
    "PackedBatch",
    "collate",
    "collate_packed",
    "edge_geometry",
    "residue_types",
]

#: one-letter codes of the 20 standard amino acids; index 20 is ``X`` (unknown)
ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
UNKNOWN_RESIDUE = ALPHABET.index("X")
_INDEX = {aa: i for i, aa in enumerate(ALPHABET)}


def residue_types(sequence: str) -> Tensor:
    """``[L] long`` indices of a one-letter sequence in :data:`ALPHABET` (unknown -> X)."""
    return torch.tensor([_INDEX.get(aa, UNKNOWN_RESIDUE) for aa in sequence], dtype=torch.long)


def edge_geometry(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """CA-CA distance ``[E]`` and unit vector ``[E, 3]`` (float32, on the CPU) of every edge
    ``source -> target`` of ``edge_index`` ``[2, E]``, from the positions ``pos`` ``[N, 3]``:
    in float64, ``dx*dx + dy*dy + dz*dz`` in that order (elementwise operations, so the same
    bits on any machine), then rounded to float32; an edge of length 0 has the zero vector.

    This is how the graph store recomputes edge geometry that it leaves out of a record
    (when recomputing gives the very bits a graph holds). A featurizer that computes its
    ``edge_distance`` and ``edge_vector`` here spares the store that check: the store knows
    these tensors, by identity and by the version counters that in-place torch operations
    advance, and by their memory. Change them or their inputs afterwards only through torch
    (a write through a numpy view, or into ``.data``, is not seen: the record would then
    hold the geometry of the original positions). Under ``torch.inference_mode`` nothing is
    remembered and the store checks by recomputing.
    """
    out = _edge_geometry(pos, edge_index)
    _remember_geometry(pos, edge_index, *out)
    return out


def _edge_geometry(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`edge_geometry`, not remembered (what the store computes for itself)."""
    index = edge_index.detach().cpu().numpy()
    distance = np.empty(index.shape[1], dtype=np.float32)
    vector = np.empty((index.shape[1], 3), dtype=np.float32)
    edge_geometry_into(pos.detach().cpu().numpy(), index[0], index[1], distance, vector)
    return torch.from_numpy(distance), torch.from_numpy(vector)


def edge_geometry_into(
    pos: np.ndarray, source: np.ndarray, target: np.ndarray, distance: np.ndarray, vector: np.ndarray
) -> None:
    """:func:`edge_geometry` of ``pos`` [N, 3] and edges ``source -> target``, written into
    ``distance`` [E] and ``vector`` [E, 3] (float32): the store's batch read computes a whole
    batch's edges in one go, to the same bits as chain by chain (every step is elementwise)."""
    # one contiguous array per coordinate (strided columns of an [E, 3] array are slower)
    x, y, z = pos.T.astype(np.float64)
    dx = x[target]
    dx -= x[source]
    dy = y[target]
    dy -= y[source]
    dz = z[target]
    dz -= z[source]
    length = dx * dx
    length += dy * dy
    length += dz * dz
    np.sqrt(length, out=length)
    distance[...] = length
    apart = length > 0
    # no two CA atoms at one place and every length finite, the usual case: no division can
    # warn (an infinite or NaN position makes an edge whose division does)
    every = bool(apart.all()) and (len(length) == 0 or math.isfinite(float(length.max())))
    with contextlib.nullcontext() if every else np.errstate(divide="ignore", invalid="ignore"):
        for column, delta in enumerate((dx, dy, dz)):
            np.divide(delta, length, out=delta)
            vector[:, column] = delta
    if not every:
        vector[~apart] = 0  # a zero-length edge (or one of undefined length) keeps the zero vector


#: id(distance) -> weak references to (distance, vector, pos, edge_index) of an
#: :func:`edge_geometry` result and what the four tensors were then (:func:`_state`); an
#: entry goes when its distance tensor does
_MADE: dict[int, tuple[tuple[weakref.ref[Tensor], ...], tuple[Any, ...]]] = {}


def _state(tensors: tuple[Tensor, ...]) -> tuple[Any, ...] | None:
    """What must not have changed about the tensors: their version counters (moved by every
    in-place torch operation) and their memory, dtype, shape and strides (changed by
    assigning ``.data`` or ``set_``); ``None`` for inference tensors, which keep no version."""
    if any(t.is_inference() for t in tensors):
        return None
    return tuple(
        (t._version, t.data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), t.stride()) for t in tensors
    )


def _remember_geometry(pos: Tensor, edge_index: Tensor, distance: Tensor, vector: Tensor) -> None:
    tensors = (distance, vector, pos, edge_index)
    state = _state(tensors)
    if state is None:
        return  # the store then checks by recomputing, as for any other graph
    key = id(distance)
    # (the callback holds the table itself: module globals may be gone when it runs at exit)
    forget = lambda _, made=_MADE: made.pop(key, None)  # noqa: E731
    refs = (weakref.ref(distance, forget), *map(weakref.ref, tensors[1:]))
    _MADE[key] = refs, state


def made_by_edge_geometry(pos: Tensor, edge_index: Tensor, distance: Tensor, vector: Tensor) -> bool:
    """Whether ``distance`` and ``vector`` are the very tensors :func:`edge_geometry` returned
    for these very ``pos`` and ``edge_index``, none of the four changed since (in place, or
    given other memory)."""
    entry = _MADE.get(id(distance))
    if entry is None:
        return False
    refs, state = entry
    tensors = (distance, vector, pos, edge_index)
    return all(ref() is t for ref, t in zip(refs, tensors, strict=True)) and _state(tensors) == state


# Node-level and edge-level tensor fields, shared by ProteinGraph and Batch.
_NODE_FIELDS = (
    "residue_type",
    "residue_number",
    "pos",
    "backbone",
    "backbone_mask",
    "dihedrals",
    "dihedral_mask",
    "node_attr",
)
_EDGE_FIELDS = ("edge_distance", "edge_vector", "edge_attr")


@dataclasses.dataclass(repr=False)
class ProteinGraph:
    """One protein chain as a residue graph.

    Attributes
    ----------
    source: path of the structure file the chain came from.
    chain_id: the chain's identifier in that file.
    sequence: one-letter codes of the observed residues in order (``X`` for unknown).
    residue_type: [N] long, index of each residue in :data:`ALPHABET`.
    residue_number: [N] long, author residue numbers (insertion codes share a number).
    pos: [N, 3] float, CA coordinates (Å).
    backbone: [N, 4, 3] float, N, CA, C, O coordinates (0 where missing).
    backbone_mask: [N, 4] bool, which backbone atoms were observed.
    dihedrals: [N, 3] float, phi, psi, omega in radians (0 where undefined).
    dihedral_mask: [N, 3] bool, which angles are defined (not at chain ends or gaps, all
        four atoms observed).
    edge_index: [2, E] long, source and target residue of each directed edge.
    edge_distance: [E] float, CA-CA distance of each edge (Å).
    edge_vector: [E, 3] float, unit vector from source to target CA.
    edge_attr: [E, F_e] float, featurizer-specific edge features (F_e may be 0).
    node_attr: [N, F_n] float, featurizer-specific node features (F_n may be 0).
    """

    source: str
    chain_id: str
    sequence: str
    residue_type: Tensor
    residue_number: Tensor
    pos: Tensor
    backbone: Tensor
    backbone_mask: Tensor
    dihedrals: Tensor
    dihedral_mask: Tensor
    edge_index: Tensor
    edge_distance: Tensor
    edge_vector: Tensor
    edge_attr: Tensor
    node_attr: Tensor

    def __post_init__(self) -> None:
        self.validate()

    def __repr__(self) -> str:
        # one line, not the tensors: ProteinGraph(source='1abc.pdb', chain='A', residues=58, edges=812)
        features = self.node_attr.shape[1], self.edge_attr.shape[1]
        extra = f", node_attr={features[0]}, edge_attr={features[1]}" if any(features) else ""
        return (
            f"ProteinGraph(source={self.source!r}, chain={self.chain_id!r}, residues={self.num_nodes}, "
            f"edges={self.num_edges}{extra})"
        )

    @property
    def num_nodes(self) -> int:
        return int(self.pos.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def validate(self) -> None:
        """Check that shapes agree; raises ``ValueError`` naming the field."""
        n = len(self.sequence)
        expected = {
            "residue_type": (n,),
            "residue_number": (n,),
            "pos": (n, 3),
            "backbone": (n, 4, 3),
            "backbone_mask": (n, 4),
            "dihedrals": (n, 3),
            "dihedral_mask": (n, 3),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"ProteinGraph {self.source}:{self.chain_id}: {name} has shape "
                    f"{tuple(getattr(self, name).shape)}, expected {shape}"
                )
        if self.node_attr.dim() != 2 or self.node_attr.shape[0] != n:
            raise ValueError(f"ProteinGraph {self.source}:{self.chain_id}: node_attr must be [N, F]")
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"ProteinGraph {self.source}:{self.chain_id}: edge_index must be [2, E]")
        e = self.num_edges
        for name, shape in (("edge_distance", (e,)), ("edge_vector", (e, 3))):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"ProteinGraph {self.source}:{self.chain_id}: {name} has shape "
                    f"{tuple(getattr(self, name).shape)}, expected {shape}"
                )
        if self.edge_attr.dim() != 2 or self.edge_attr.shape[0] != e:
            raise ValueError(f"ProteinGraph {self.source}:{self.chain_id}: edge_attr must be [E, F]")

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and strings, loadable with ``torch.load(..., weights_only=True)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProteinGraph:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def to_pyg(self) -> Any:
        """This graph as a ``torch_geometric.data.Data`` (``x``, ``pos``, ``edge_index``,
        ``edge_attr`` and every field under its own name); see :mod:`protsteps.pyg`."""
        from .pyg import to_pyg

        return to_pyg(self)

    @classmethod
    def from_pyg(cls, data: Any) -> ProteinGraph:
        """A graph from a ``torch_geometric.data.Data``; see :mod:`protsteps.pyg`."""
        from .pyg import from_pyg

        return from_pyg(data)


@dataclasses.dataclass(repr=False)
class Batch:
    """Several :class:`ProteinGraph` concatenated into one disconnected graph.

    Node and edge tensors have the meaning they have in :class:`ProteinGraph`, stacked;
    ``edge_index`` is offset so it indexes the batch's residues. In addition:

    batch: [N] long, the protein (0..B-1) each residue belongs to.
    ptr: [B + 1] long, residues of protein b are ``ptr[b]:ptr[b+1]``.
    edge_ptr: [B + 1] long, edges of protein b are ``edge_ptr[b]:edge_ptr[b+1]``.
    dihedral_input_mask: [N, 3] bool, the angles the encoder may see. It starts equal to
        ``dihedral_mask``; a task that masks angles (the dihedral task) clears entries here,
        and encoders must zero the angle features where it is False.
    sequences, sources, chain_ids: one entry per protein.
    """

    sequences: list[str]
    sources: list[str]
    chain_ids: list[str]
    residue_type: Tensor
    residue_number: Tensor
    pos: Tensor
    backbone: Tensor
    backbone_mask: Tensor
    dihedrals: Tensor
    dihedral_mask: Tensor
    node_attr: Tensor
    edge_index: Tensor
    edge_distance: Tensor
    edge_vector: Tensor
    edge_attr: Tensor
    batch: Tensor
    ptr: Tensor
    edge_ptr: Tensor
    dihedral_input_mask: Tensor

    @property
    def num_graphs(self) -> int:
        return len(self.sequences)

    def __repr__(self) -> str:
        # one line, not the tensors: Batch(proteins=3, residues=250, edges=3100, device=cpu, chains=[...])
        chains = [f"{Path(s).name}:{c}" for s, c in zip(self.sources, self.chain_ids, strict=True)]
        shown = ", ".join(chains[:3]) + (f", ... ({len(chains) - 3} more)" if len(chains) > 3 else "")
        return (
            f"Batch(proteins={self.num_graphs}, residues={self.num_nodes}, edges={self.num_edges}, "
            f"device={self.device}, chains=[{shown}])"
        )

    @property
    def num_nodes(self) -> int:
        return int(self.pos.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def lengths(self) -> Tensor:
        """[B] long, residues per protein."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def device(self) -> torch.device:
        return self.pos.device

    def replace(self, **changes: Any) -> Batch:
        """A shallow copy with some fields replaced (tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """The batch on ``device``; with ``dtype``, floating tensors are cast too."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                if dtype is not None and value.is_floating_point():
                    changes[f.name] = value.to(device=device, dtype=dtype)
                else:
                    changes[f.name] = value.to(device)
        return dataclasses.replace(self, **changes)

    def to_pyg(self) -> Any:
        """This batch as a ``torch_geometric.data.Batch``; see :mod:`protsteps.pyg`."""
        from .pyg import batch_to_pyg

        return batch_to_pyg(self)

    def pin_memory(self) -> Batch:
        changes = {
            f.name: getattr(self, f.name).pin_memory()
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **changes)


def _cat_attr(graphs: Sequence[ProteinGraph], name: str) -> Tensor:
    widths = {g.__dict__[name].shape[1] for g in graphs}
    if len(widths) > 1:
        raise ValueError(
            f"cannot collate graphs whose {name} widths differ ({sorted(widths)}); "
            "were they made by different featurizer settings?"
        )
    return torch.cat([getattr(g, name) for g in graphs], dim=0)


def collate(graphs: Sequence[ProteinGraph]) -> Batch:
    """Concatenate graphs into a :class:`Batch`.

    >>> batch = collate([graph_a, graph_b])  # doctest: +SKIP
    >>> batch.ptr  # tensor([0, len_a, len_a + len_b])  # doctest: +SKIP
    """
    if isinstance(graphs, CollatedGraphs):  # read as one batch (GraphDataset.__getitems__)
        return graphs.batch
    if len(graphs) == 0:
        raise ValueError("cannot collate an empty list of graphs")
    nodes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    edges = torch.tensor([g.num_edges for g in graphs], dtype=torch.long)
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(nodes, 0)
    edge_ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    edge_ptr[1:] = torch.cumsum(edges, 0)
    edge_index = (
        torch.cat([g.edge_index + ptr[i] for i, g in enumerate(graphs)], dim=1)
        if graphs
        else torch.zeros(2, 0, dtype=torch.long)
    )
    fields: dict[str, Any] = {}
    for name in _NODE_FIELDS + _EDGE_FIELDS:
        if name in ("node_attr", "edge_attr"):
            fields[name] = _cat_attr(graphs, name)
        else:
            fields[name] = torch.cat([getattr(g, name) for g in graphs], dim=0)
    return Batch(
        sequences=[g.sequence for g in graphs],
        sources=[g.source for g in graphs],
        chain_ids=[g.chain_id for g in graphs],
        edge_index=edge_index,
        # numpy's repeat: torch.repeat_interleave with a tensor of counts costs milliseconds here
        batch=torch.from_numpy(np.repeat(np.arange(len(graphs), dtype=np.int64), nodes.numpy())),
        ptr=ptr,
        edge_ptr=edge_ptr,
        dihedral_input_mask=fields["dihedral_mask"].clone(),
        **fields,
    )


_ALIGN = 16


@dataclasses.dataclass
class PackedBatch:
    """A :class:`Batch` whose tensors lie in one byte buffer: what a DataLoader worker sends.

    A tensor crosses from a worker to the training process in shared memory, one segment
    (a file descriptor, a mapping, a message) per tensor; a batch has about twenty, and for
    batches of small proteins handing them over costs more than reading and collating them.
    Packed, a batch is one segment; :meth:`unpack` gives the batch back as views of it
    (nothing is copied; the views are ordinary tensors, writable, on separate bytes).
    """

    buffer: Tensor  # [bytes] uint8
    layout: list[tuple[str, torch.dtype, tuple[int, ...], int, int]]  # (field, dtype, shape, offset, bytes)
    sequences: list[str]
    sources: list[str]
    chain_ids: list[str]

    @staticmethod
    def allocate(
        specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]],
    ) -> tuple[Tensor, list[tuple[str, torch.dtype, tuple[int, ...], int, int]]]:
        """A buffer for tensors of these ``(field, dtype, shape)`` and its layout, each field
        at a 16-byte-aligned offset. The padding between fields is zeroed (the fields' own
        bytes are left for the caller to write), so that equal batches pack to equal bytes."""
        layout: list[tuple[str, torch.dtype, tuple[int, ...], int, int]] = []
        offset = 0
        for name, dtype, shape in specs:
            size = math.prod(shape) * dtype.itemsize
            layout.append((name, dtype, shape, offset, size))
            offset += -(-size // _ALIGN) * _ALIGN
        if torch.utils.data.get_worker_info() is not None:
            # in a DataLoader worker the batch goes to shared memory anyway: put it there
            # first, so that it is written once rather than written and then copied (made
            # there directly, as torch's default_collate makes its batches)
            buffer = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(offset))
        else:
            buffer = torch.empty(offset, dtype=torch.uint8)
        target = buffer.numpy()
        for _, _, _, start, size in layout:
            end = start + -(-size // _ALIGN) * _ALIGN
            if end > start + size:
                target[start + size : end] = 0
        return buffer, layout

    @classmethod
    def pack(cls, batch: Batch) -> PackedBatch:
        tensors = [
            (f.name, getattr(batch, f.name))
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), Tensor)
        ]
        buffer, layout = cls.allocate([(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in tensors])
        target = buffer.numpy()  # numpy copies: torch's threaded copy is slower for these sizes
        for (_, tensor), (_, _, _, start, size) in zip(tensors, layout, strict=True):
            if size:
                source = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
                target[start : start + size] = source
        return cls(buffer, layout, batch.sequences, batch.sources, batch.chain_ids)

    def unpack(self) -> Batch:
        fields = {
            name: self.buffer[start : start + size].view(dtype).view(shape)
            for name, dtype, shape, start, size in self.layout
        }
        return Batch(sequences=self.sequences, sources=self.sources, chain_ids=self.chain_ids, **fields)


class CollatedGraphs(Sequence[ProteinGraph]):
    """Graphs read from the store as one batch (``GraphDataset.__getitems__``), already
    packed: :func:`collate` and :func:`collate_packed` take the batch as it is. Indexing
    gives each :class:`ProteinGraph` (copies of the batch's slices), so a ``collate_fn`` of
    one's own that iterates over the graphs sees what a list of ``dataset[i]`` gives."""

    __slots__ = ("_batch", "packed")

    def __init__(self, packed: PackedBatch) -> None:
        self.packed = packed
        self._batch: Batch | None = None

    def __len__(self) -> int:
        return len(self.packed.sequences)

    @property
    def batch(self) -> Batch:
        """The :class:`Batch` (views of the packed buffer, made once)."""
        if self._batch is None:
            self._batch = self.packed.unpack()
        return self._batch

    @overload
    def __getitem__(self, index: int) -> ProteinGraph: ...

    @overload
    def __getitem__(self, index: slice) -> list[ProteinGraph]: ...

    def __getitem__(self, index: int | slice) -> ProteinGraph | list[ProteinGraph]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"graph {index} of a batch of {count}")
        index %= count
        batch = self.batch
        n0, n1 = int(batch.ptr[index]), int(batch.ptr[index + 1])
        e0, e1 = int(batch.edge_ptr[index]), int(batch.edge_ptr[index + 1])
        fields = {name: getattr(batch, name)[n0:n1].clone() for name in _NODE_FIELDS}
        fields.update({name: getattr(batch, name)[e0:e1].clone() for name in _EDGE_FIELDS})
        return ProteinGraph(
            source=batch.sources[index],
            chain_id=batch.chain_ids[index],
            sequence=batch.sequences[index],
            edge_index=batch.edge_index[:, e0:e1] - n0,
            **fields,
        )


def collate_packed(graphs: Sequence[ProteinGraph]) -> PackedBatch:
    """:func:`collate`, packed into one buffer (:class:`PackedBatch`): the ``collate_fn``
    of a DataLoader with workers; the training process calls ``.unpack()`` on what it gets.
    Graphs read as one batch (:class:`CollatedGraphs`) are packed already."""
    if isinstance(graphs, CollatedGraphs):
        return graphs.packed
    return PackedBatch.pack(collate(graphs))
