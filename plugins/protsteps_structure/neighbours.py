"""Neighbour search over CA coordinates without a Python loop over residues or pairs.

Distances are computed for a block of target residues against all residues at a time, so
memory is O(block x N) rather than O(N^2): with the default budget a 5,000-residue chain
needs a few tens of MB. Edges are directed ``(source j, target i)`` pairs, ``i != j``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PAIR_BUDGET", "block_rows", "radius_edges", "knn_edges", "sequential_edges", "merge_edges"]

#: residue pairs whose distances are held in memory at once (a block of rows x N)
PAIR_BUDGET = 1 << 20


def block_rows(num_nodes: int, pair_budget: int = PAIR_BUDGET) -> int:
    """Target residues per block so that a block holds at most ``pair_budget`` pairs."""
    return max(1, pair_budget // max(1, num_nodes))


def _square_distances(pos: np.ndarray, start: int, stop: int) -> np.ndarray:
    """[stop - start, N] float64, squared distances from ``pos[start:stop]`` to every residue."""
    diff = pos[start:stop, None, :] - pos[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def radius_edges(
    pos: np.ndarray, radius: float, pair_budget: int = PAIR_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs closer than ``radius`` (strictly), both directions.

    pos: [N, 3] float64. Returns (source [E] int64, target [E] int64).
    """
    num = len(pos)
    rows = block_rows(num, pair_budget)
    limit = radius * radius
    sources, targets = [], []
    for start in range(0, num, rows):
        stop = min(num, start + rows)
        square = _square_distances(pos, start, stop)
        square[np.arange(stop - start), np.arange(start, stop)] = np.inf
        target, source = np.nonzero(square < limit)
        sources.append(source)
        targets.append(target + start)
    return _concat(sources), _concat(targets)


def knn_edges(pos: np.ndarray, k: int, pair_budget: int = PAIR_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Each residue's ``k`` nearest other residues as its sources (all of them when the
    chain has at most ``k + 1`` residues).

    pos: [N, 3] float64. Returns (source [E] int64, target [E] int64).
    """
    num = len(pos)
    k = min(k, num - 1)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = block_rows(num, pair_budget)
    sources, targets = [], []
    for start in range(0, num, rows):
        stop = min(num, start + rows)
        square = _square_distances(pos, start, stop)
        square[np.arange(stop - start), np.arange(start, stop)] = np.inf
        nearest = np.argpartition(square, k - 1, axis=1)[:, :k]
        sources.append(nearest.reshape(-1))
        targets.append(np.repeat(np.arange(start, stop), k))
    return _concat(sources), _concat(targets)


def sequential_edges(num_nodes: int, max_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Residues at most ``max_offset`` positions apart in chain order, both directions.

    Returns (source [E] int64, target [E] int64).
    """
    offsets = np.arange(1, min(max_offset, num_nodes - 1) + 1) if num_nodes > 1 else np.zeros(0, np.int64)
    if len(offsets) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lows = [np.arange(num_nodes - d) for d in offsets.tolist()]
    low = np.concatenate(lows)
    high = low + np.repeat(offsets, [len(x) for x in lows])
    return np.concatenate([low, high]), np.concatenate([high, low])


def merge_edges(num_nodes: int, *edge_sets: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The union of edge sets without duplicates, sorted by target then source.

    Returns edge_index [2, E] int64 (row 0 sources, row 1 targets).
    """
    sources = _concat([s for s, _ in edge_sets])
    targets = _concat([t for _, t in edge_sets])
    key = np.unique(targets * np.int64(num_nodes) + sources)
    return np.stack([key % num_nodes, key // num_nodes]) if len(key) else np.zeros((2, 0), np.int64)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)
