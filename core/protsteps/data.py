"""Training input: the featurized chains in the cache, and batches packed by length.

>>> report = featurize_many(["structures/"])                       # doctest: +SKIP
>>> dataset = GraphDataset.from_report(report)                     # doctest: +SKIP
>>> sampler = LengthBatchSampler(dataset.lengths, max_residues=4096, seed=0)  # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler,
...                                      collate_fn=protsteps.collate)        # doctest: +SKIP
>>> for epoch in range(epochs):                                    # doctest: +SKIP
...     sampler.set_epoch(epoch)
...     for batch in loader: ...

The dataset holds only keys and lengths; each graph is read from the cache when a batch
needs it. The sampler decides batches from lengths alone, deterministically from
``(seed, epoch)``, and its :meth:`~LengthBatchSampler.state_dict` resumes an epoch at the
exact batch it stopped at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.utils.data

from .errors import ProtstepsError
from .featurize import FeaturizeReport, GraphCache
from .graph import CollatedGraphs, ProteinGraph
from .structure import split_selection

__all__ = ["GraphDataset", "LengthBatchSampler"]


class GraphDataset(torch.utils.data.Dataset[ProteinGraph]):
    """Featurized chains, loaded from the graph store on access.

    The rows are held as packed columns (keys, sources and chain ids as one UTF-8 buffer
    each plus offsets, residue counts as int64), about 150 bytes per chain and no Python
    object per row, so a
    dataset of millions of chains is small and DataLoader workers forked from it share its
    pages instead of copying them as they touch reference counts.

    Parameters
    ----------
    entries:
        Rows like ``report.json``'s ``ok`` rows: ``{"source", "chain", "residues", "key"}``.
    cache_dir:
        The store the keys live in (``None``: the default cache).
    """

    def __init__(self, entries: Sequence[Mapping[str, Any]], cache_dir: str | os.PathLike[str] | None = None):
        for index, entry in enumerate(entries):
            missing = {"source", "chain", "residues", "key"} - set(entry)
            if missing:
                raise ProtstepsError(f"dataset entry {index} lacks {', '.join(sorted(missing))}")
        self._keys = _Strings.pack([str(e["key"]) for e in entries])
        self._sources = _Strings.pack([_file_of(str(e["source"])) for e in entries])
        self._chains = _Strings.pack([str(e["chain"]) for e in entries])
        self._lengths = np.asarray([int(e["residues"]) for e in entries], dtype=np.int64)
        self.cache = GraphCache(cache_dir)

    @classmethod
    def from_report(
        cls,
        report: FeaturizeReport | Mapping[str, Any] | str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        min_residues: int = 0,
    ) -> GraphDataset:
        """The ``ok`` chains of a :class:`~protsteps.featurize.FeaturizeReport`, of its JSON
        document, or of a ``report.json`` file, leaving out chains shorter than
        ``min_residues``. ``cache_dir`` defaults to the report's own (for a report object)
        or the default cache."""
        if isinstance(report, FeaturizeReport):
            rows: Sequence[Mapping[str, Any]] = report.ok
            cache_dir = cache_dir if cache_dir is not None else report.cache_dir
        elif isinstance(report, Mapping):
            rows = report["ok"]
        else:
            path = Path(report)
            try:
                rows = json.loads(path.read_text("utf-8"))["ok"]
            except (OSError, ValueError, KeyError) as exc:
                raise ProtstepsError(f"{path}: not a readable featurize report ({exc})") from None
        return cls([r for r in rows if int(r["residues"]) >= min_residues], cache_dir)

    @property
    def lengths(self) -> np.ndarray:
        """[len(self)] int64, residues per chain (known without loading any graph)."""
        return self._lengths

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The rows as dicts ``{"source", "chain", "residues", "key"}`` (made on demand)."""
        return [self.entry(i) for i in range(len(self))]

    def entry(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict ``{"source", "chain", "residues", "key"}``."""
        return {
            "source": self._sources[index],
            "chain": self._chains[index],
            "residues": int(self._lengths[index]),
            "key": self._keys[index],
        }

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, index: int) -> ProteinGraph:
        graph = self.cache.load_graph(self._keys[index])
        # The store is addressed by content: a graph may have been made from another copy
        # of the same file, so the source is the one this dataset was built from.
        graph.source = self._sources[index]
        return graph

    def __getitems__(self, indices: Sequence[int]) -> Sequence[ProteinGraph]:
        """The graphs of ``indices``, read as one batch: what a DataLoader with a batch
        sampler hands its ``collate_fn``. The batch is read at once (one index query, each
        record checked once, the tensors copied straight into one packed buffer) and comes
        as :class:`~protsteps.graph.CollatedGraphs`, which ``collate``/``collate_packed``
        take as it is and which gives the graphs when indexed; exactly
        ``collate_packed([self[i] for i in indices])``. A batch that cannot be read so (a
        chain missing or damaged, graphs ``collate`` would refuse) is read chain by chain,
        with the errors ``self[i]`` raises."""
        keys = [self._keys[i] for i in indices]
        packed = self.cache.read_packed(keys) if keys else None
        if packed is None:
            return [self[i] for i in indices]
        packed.sources = [self._sources[i] for i in indices]  # as __getitem__ gives them
        return CollatedGraphs(packed)

    def subset(self, indices: Sequence[int]) -> GraphDataset:
        """A dataset of some of these entries (e.g. a train/validation split)."""
        chosen = np.asarray(indices, dtype=np.int64)
        out = GraphDataset.__new__(GraphDataset)
        out._keys, out._sources = self._keys.take(chosen), self._sources.take(chosen)
        out._chains, out._lengths = self._chains.take(chosen), self._lengths[chosen]
        out.cache = self.cache
        return out


def _file_of(source: str) -> str:
    """The file (or container member) of a report's source, without a ``:CHAIN`` selection."""
    if ":" not in source:  # the common case, without split_selection's stat
        return source
    return str(split_selection(source)[0])


class _Strings:
    """Strings packed as one UTF-8 buffer and offsets (no Python object per string, no
    padding to the longest)."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self._data, self._offsets = data, offsets

    @classmethod
    def pack(cls, values: Sequence[str]) -> _Strings:
        encoded = [v.encode("utf-8", "surrogateescape") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(v) for v in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, stop = self._offsets[index], self._offsets[index + 1]
        return self._data[start:stop].tobytes().decode("utf-8", "surrogateescape")

    def take(self, indices: np.ndarray) -> _Strings:
        starts, stops = self._offsets[indices], self._offsets[indices + 1]
        lengths = stops - starts
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # the byte positions of every chosen string, in order: each string's start, then +1
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return _Strings(self._data[positions], offsets)


class LengthBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of dataset indices packed by length under a residue budget.

    Each epoch: the chains are shuffled with a generator seeded by ``(seed, epoch)``; within
    windows of the shuffled order they are sorted by a jittered length (so that a batch
    holds chains of similar, not identical, lengths and batches differ between epochs); the
    sorted chains are packed greedily so that ``proteins x longest chain`` stays within
    ``max_residues`` (the padded size a sequence model sees, which bounds the residue count
    too) and the count within ``batch_size`` (when given); the batches are shuffled. A chain
    longer than the budget makes a batch of its own.

    Without a budget (``max_residues = 0``) batches are ``batch_size`` consecutive chains of
    the shuffled order.

    For distributed training every rank builds the same list (same seed) and takes every
    ``world_size``-th batch starting at ``rank``; the list is first padded by repeating
    batches from its start (or cut, with ``drop_last``) so that every rank gets the same
    number.

    Parameters
    ----------
    lengths: residues per dataset item.
    max_residues: the budget (0: none; then ``batch_size`` is required).
    batch_size: most proteins per batch (0: no limit; required without a budget).
    shuffle: shuffle (training) or keep the dataset order (evaluation).
    seed: seeds the order together with the epoch.
    drop_last: with several ranks, cut batches instead of repeating some.
    rank, world_size: this process's place among distributed processes.
    window: chains sorted together, in batches' worth (default 16).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_residues: int = 0,
        batch_size: int = 0,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        window: int = 16,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if max_residues < 0 or batch_size < 0:
            raise ValueError("max_residues and batch_size must be >= 0")
        if max_residues == 0 and batch_size == 0:
            raise ValueError("give max_residues (a residue budget) or batch_size")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size = {world_size})")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.max_residues = max_residues
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.window = window
        self.epoch = 0
        self.position = 0
        self._cached: tuple[int, list[list[int]]] | None = None

    # -- the epoch's batches

    def _generator(self) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))

    def _all_batches(self) -> list[list[int]]:
        """Every rank's batches of the current epoch, before sharding."""
        count = len(self.lengths)
        rng = self._generator()
        order = rng.permutation(count) if self.shuffle else np.arange(count)
        if not self.max_residues:
            return [order[i : i + self.batch_size].tolist() for i in range(0, count, self.batch_size)]
        typical = max(1, int(np.median(self.lengths)) if count else 1)
        per_batch = max(1, self.max_residues // typical)
        if self.batch_size:
            per_batch = min(per_batch, self.batch_size)
        span = self.window * per_batch
        jitter = np.exp(rng.uniform(-0.2, 0.2, size=count)) if self.shuffle else np.ones(count)
        batches: list[list[int]] = []
        for start in range(0, count, span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(self.lengths[chunk] * jitter[chunk], kind="stable")]
            batches.extend(self._pack(chunk))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _pack(self, chunk: np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in chunk.tolist():
            length = int(self.lengths[index])
            grown = max(longest, length)
            full = self.batch_size and len(current) >= self.batch_size
            if current and (full or grown * (len(current) + 1) > self.max_residues):
                batches.append(current)
                current, grown = [], length
            current.append(index)
            longest = grown
        if current:
            batches.append(current)
        return batches

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, in order."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        batches = self._all_batches()
        if self.world_size > 1 and batches:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % self.world_size]
            else:
                missing = -len(batches) % self.world_size
                batches = batches + [batches[i % len(batches)] for i in range(missing)]
            batches = batches[self.rank :: self.world_size]
        self._cached = (self.epoch, batches)
        return batches

    # -- the Sampler protocol

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`__iter__` yields; a different epoch starts
        at its first batch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def __iter__(self) -> Iterator[list[int]]:
        """The epoch's batches from the current position; ``position`` counts the batches
        handed out and returns to 0 when the epoch is exhausted."""
        batches = self.batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)
        self.position = 0

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch (all of them, not the ones left)."""
        return len(self.batches())

    # -- exact resume

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "position"}``. With a DataLoader that prefetches, the sampler
        runs ahead of training: store the number of batches the loop actually consumed as
        ``position`` instead."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue at ``state["position"]`` of ``state["epoch"]``."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
