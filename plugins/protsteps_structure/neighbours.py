"""Neighbour search over CA coordinates without a Python loop over residues or pairs.

Three ways, all exact (they return the pairs a pair-by-pair check would):

- tree: scipy's k-d tree (``cKDTree.query_pairs``, compiled, the radius widened by a
  rounding margin), every candidate pair then decided on its exact difference; used for
  radius edges of chains up to ``CELL_SEARCH_FROM`` residues, where it is 2-5x faster than
  blocks (a chain of a few hundred residues has some 10 neighbours per residue, so
  a dense distance matrix is mostly wasted work);
- blocks: distances of a block of target residues to all residues at a time, memory
  O(block x N) instead of O(N^2); used for kNN, and for radius edges where the other two
  cannot be used (non-finite coordinates, a candidate budget exceeded);
- cells: residues binned into cubes of the radius' side, pairs looked for only in the 27
  cubes around each residue, O(N) time and memory for protein-like densities; used for
  radius edges of long chains, unless the candidate pairs would exceed the memory budget
  (a degenerate structure with every atom in one place), where blocks take over.

Edges are directed ``(source j, target i)`` pairs, ``i != j``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PAIR_BUDGET",
    "CELL_CANDIDATE_BUDGET",
    "block_rows",
    "radius_edges",
    "knn_edges",
    "sequential_edges",
    "merge_edges",
]

#: residue pairs whose distances are held in memory at once (a block of rows x N); small
#: enough to stay in cache, which is faster than one large block
PAIR_BUDGET = 1 << 16
#: most candidate pairs the cell search may hold (int64 indices and float64 differences:
#: about 50 bytes each, so 400 MB at most)
CELL_CANDIDATE_BUDGET = 8_000_000
#: chains at least this long use the cell search for radius edges
CELL_SEARCH_FROM = 1000


def block_rows(num_nodes: int, pair_budget: int = PAIR_BUDGET) -> int:
    """Target residues per block so that a block holds at most ``pair_budget`` pairs."""
    return max(1, pair_budget // max(1, num_nodes))


def _square_distances(pos: np.ndarray, norms: np.ndarray, start: int, stop: int) -> np.ndarray:
    """[stop - start, N] float64, squared distances from ``pos[start:stop]`` to every residue
    as |a|^2 + |b|^2 - 2 a.b (one matrix product; rounding error below
    :func:`_rounding_bound`). The diagonal is set to infinity."""
    square = norms[start:stop, None] + norms[None, :] - 2.0 * (pos[start:stop] @ pos.T)
    square[np.arange(stop - start), np.arange(start, stop)] = np.inf
    return square


def _rounding_bound(norms: np.ndarray) -> float:
    """An upper bound on the rounding error of :func:`_square_distances` (a generous
    multiple of machine epsilon times the largest squared norm)."""
    return 64.0 * np.finfo(np.float64).eps * (float(norms.max()) if len(norms) else 0.0) + 1e-12


def radius_edges(
    pos: np.ndarray, radius: float, pair_budget: int = PAIR_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs closer than ``radius`` (strictly), both directions.

    pos: [N, 3] float64. Returns (source [E] int64, target [E] int64), ordered by target
    then source.
    """
    if len(pos) >= CELL_SEARCH_FROM:
        found = _radius_edges_cells(pos, radius)
        if found is not None:
            return found
    elif len(pos) > 1 and np.isfinite(pos).all():
        return _radius_edges_tree(pos, radius)
    return _radius_edges_blocks(pos, radius, pair_budget)


def _radius_edges_tree(pos: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Radius edges through a k-d tree; ordered by target then source like the others."""
    from scipy.spatial import cKDTree

    num = len(pos)
    # The tree measures distances its own way: ask for a little more than the radius, then
    # decide each pair on the difference the other searches compute.
    reach = radius * (1.0 + 1e-9) + 1e-9
    tree = cKDTree(pos, leafsize=16, compact_nodes=False, balanced_tree=False)
    pairs = tree.query_pairs(reach, output_type="ndarray")
    first, second = pairs[:, 0], pairs[:, 1]
    # (np.take: a quarter of the time of pos[first] for rows of three)
    diff = np.take(pos, first, axis=0) - np.take(pos, second, axis=0)
    keep = np.einsum("ij,ij->i", diff, diff) < radius * radius
    first, second = first[keep], second[keep]
    # ordered by the key target * num + source, below 2**32 (a chain searched here has fewer
    # than CELL_SEARCH_FROM residues): uint32 sorts and divides several times faster than int64
    size = np.uint32(num)
    first, second = first.astype(np.uint32), second.astype(np.uint32)
    pair = np.sort(np.concatenate((first * size + second, second * size + first)))
    target = pair // size
    source = pair - target * size
    return source.astype(np.int64), target.astype(np.int64)


def _radius_edges_blocks(pos: np.ndarray, radius: float, pair_budget: int) -> tuple[np.ndarray, np.ndarray]:
    num = len(pos)
    rows = block_rows(num, pair_budget)
    limit = radius * radius
    norms = np.einsum("ij,ij->i", pos, pos)
    slack = _rounding_bound(norms)
    sources, targets = [], []
    for start in range(0, num, rows):
        stop = min(num, start + rows)
        square = _square_distances(pos, norms, start, stop)
        target, source = np.nonzero(square < limit + slack)
        target += start
        # Pairs near the boundary are decided on the exact difference, so the result is the
        # one a pair-by-pair computation gives.
        diff = pos[target] - pos[source]
        keep = np.einsum("ij,ij->i", diff, diff) < limit
        sources.append(source[keep])
        targets.append(target[keep])
    return _concat(sources), _concat(targets)


_OFFSETS = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)], dtype=np.int64
)


def _radius_edges_cells(pos: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Radius edges through a cell list; ``None`` when the candidates exceed
    :data:`CELL_CANDIDATE_BUDGET`."""
    num = len(pos)
    # One empty layer of cells around the occupied ones, so neighbour keys never wrap.
    cells = np.floor((pos - pos.min(axis=0)) / radius).astype(np.int64) + 1
    dims = cells.max(axis=0) + 2
    key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    shifts = (_OFFSETS[:, 0] * dims[1] + _OFFSETS[:, 1]) * dims[2] + _OFFSETS[:, 2]
    around = key[:, None] + shifts[None, :]  # [N, 27]
    low = np.searchsorted(sorted_keys, around, side="left").ravel()
    counts = np.searchsorted(sorted_keys, around, side="right").ravel() - low
    total = int(counts.sum())
    if total > CELL_CANDIDATE_BUDGET:
        return None
    target = np.repeat(np.repeat(np.arange(num, dtype=np.int64), len(shifts)), counts)
    first = np.repeat(low - (np.cumsum(counts) - counts), counts)
    source = order[first + np.arange(total, dtype=np.int64)]
    diff = pos[target] - pos[source]
    keep = (np.einsum("ij,ij->i", diff, diff) < radius * radius) & (target != source)
    pair = np.sort(target[keep] * np.int64(num) + source[keep])
    return pair % num, pair // num


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
    norms = np.einsum("ij,ij->i", pos, pos)
    sources, targets = [], []
    for start in range(0, num, rows):
        stop = min(num, start + rows)
        square = _square_distances(pos, norms, start, stop)
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
