"""The residue_graph featurizer and protsteps.featurize()."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch

import protsteps
from protsteps.errors import ConfigError, StructureError
from protsteps.structure import Chain, read_chains
from protsteps_structure.neighbours import PAIR_BUDGET, block_rows, knn_edges, radius_edges
from protsteps_structure.residue_graph import ResidueGraph, ResidueGraphConfig


@pytest.fixture(scope="module")
def chain(structures_dir) -> Chain:
    return read_chains(structures_dir / "masif" / "1A2K_AB.pdb.gz:A")[0]


def brute_force_edges(pos: np.ndarray, radius=0.0, knn=0, sequential=0) -> set[tuple[int, int]]:
    """Every (source, target) pair by a double loop over residues: the obviously right way."""
    n = len(pos)
    edges = set()
    for i in range(n):
        distances = []
        for j in range(n):
            if i == j:
                continue
            d2 = float(((pos[i].astype(np.float64) - pos[j]) ** 2).sum())
            distances.append((d2, j))
            if radius and d2 < radius * radius:
                edges.add((j, i))
            if sequential and abs(i - j) <= sequential:
                edges.add((j, i))
        for _, j in sorted(distances)[:knn]:
            edges.add((j, i))
    return edges


def edge_set(graph) -> set[tuple[int, int]]:
    return set(map(tuple, graph.edge_index.T.tolist()))


def test_registered_through_the_structure_plugin():
    entry = protsteps.get_component("featurizer", "residue_graph")
    assert entry.plugin == "structure"
    assert entry.config is ResidueGraphConfig


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"radius": 10.0},
        {"radius": 0.0, "knn": 6},
        {"radius": 0.0, "sequential": 3},
        {"radius": 5.0, "knn": 4, "sequential": 2},
    ],
)
def test_edges_match_brute_force(chain, settings):
    graph = protsteps.build("featurizer", "residue_graph", **settings)(chain)
    config = ResidueGraphConfig(**settings)
    expected = brute_force_edges(chain.ca, config.radius, config.knn, config.sequential)
    got = edge_set(graph)
    if config.knn:
        # kNN ties may be broken either way; compare the distance multisets per target
        assert got == expected or _same_up_to_ties(chain.ca, got, expected)
    else:
        assert got == expected
    assert graph.num_edges == len(got), "edges must be deduplicated"
    # sorted by target then source
    key = graph.edge_index[1] * graph.num_nodes + graph.edge_index[0]
    assert bool((key[1:] > key[:-1]).all())


def _same_up_to_ties(pos, got, expected) -> bool:
    def dists(edges):
        return sorted(round(float(np.linalg.norm(pos[i] - pos[j])), 4) for j, i in edges)

    return dists(got) == dists(expected)


def test_default_graph_is_the_papers(chain):
    graph = ResidueGraph(ResidueGraphConfig())(chain)
    assert graph.edge_distance.max() < 7.0
    assert graph.num_nodes == len(chain) and graph.sequence == chain.sequence
    source, target = graph.edge_index
    vector = graph.pos[target] - graph.pos[source]
    torch.testing.assert_close(vector.norm(dim=-1), graph.edge_distance)
    torch.testing.assert_close(graph.edge_vector, vector / vector.norm(dim=-1, keepdim=True))
    assert graph.edge_attr.shape == (graph.num_edges, 0)
    assert graph.node_attr.shape == (graph.num_nodes, 0)
    # both directions of every radius edge
    assert edge_set(graph) == {(i, j) for j, i in edge_set(graph)}
    angles, defined = chain.dihedrals()
    torch.testing.assert_close(graph.dihedrals, torch.from_numpy(angles).float())
    assert torch.equal(graph.dihedral_mask, torch.from_numpy(defined))
    torch.testing.assert_close(graph.pos, torch.from_numpy(chain.ca))


def test_edge_features_use_e3nn(chain):
    from e3nn import o3
    from e3nn.math import soft_one_hot_linspace

    featurizer = protsteps.build("featurizer", "residue_graph", rbf=8, sh_lmax=2, rbf_basis="bessel")
    graph = featurizer(chain)
    assert graph.edge_attr.shape == (graph.num_edges, 8 + 9)
    rbf = soft_one_hot_linspace(graph.edge_distance, 0.0, 7.0, 8, basis="bessel", cutoff=True)
    sh = o3.spherical_harmonics([0, 1, 2], graph.edge_vector, normalize=False, normalization="component")
    torch.testing.assert_close(graph.edge_attr, torch.cat([rbf, sh], dim=-1))
    assert "edge_attr" in featurizer.provides


def test_provides_follows_the_config():
    def provides(**settings):
        return protsteps.build("featurizer", "residue_graph", **settings).provides

    assert provides() == {
        "residue_type",
        "pos",
        "backbone",
        "dihedrals",
        "edge_index",
        "edge_distance",
        "edge_vector",
    }
    assert "edge_attr" in provides(rbf=4)
    assert "edge_attr" in provides(sh_lmax=0)
    assert provides(radius=0.0) == {"residue_type", "pos", "backbone", "dihedrals"}
    assert "edge_index" in provides(radius=0.0, knn=3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"radius": -1.0}, "radius = -1.0 is out of range: it must be >= 0"),
        ({"knn": -2}, "knn = -2 is out of range: it must be >= 0"),
        ({"sh_lmax": -3}, "sh_lmax = -3 is out of range: it must be >= -1"),
        ({"max_peptide_bond": 0.0}, "max_peptide_bond = 0.0 is out of range: it must be > 0"),
        ({"radius": 0.0, "knn": 4, "rbf": 8}, "rbf needs rbf_cutoff"),
        ({"min_residues": 10, "max_residues": 5}, "below min_residues"),
        ({"radius": "far"}, "expected a number"),
        ({"rbf_basis": "spline"}, "is not one of"),
        ({"radius_a": 3}, "did you mean 'radius'"),
    ],
)
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        protsteps.build("featurizer", "residue_graph", **settings)


def test_length_limits_and_nonfinite_coordinates(chain):
    with pytest.raises(StructureError, match=r"chain A has 124 residues, fewer than min_residues = 200"):
        ResidueGraph(ResidueGraphConfig(min_residues=200))(chain)
    with pytest.raises(StructureError, match="more than max_residues = 50"):
        ResidueGraph(ResidueGraphConfig(max_residues=50))(chain)
    backbone = chain.backbone.copy()
    backbone[5, 2] = np.nan
    broken = dataclasses.replace(chain, backbone=backbone)
    with pytest.raises(StructureError, match=r"non-finite .* residue \w+ 9"):
        ResidueGraph(ResidueGraphConfig())(broken)


def test_neighbour_search_memory_is_bounded_for_long_chains():
    rng = np.random.default_rng(0)
    n = 5000
    # a compact random-walk chain with protein-like density (CA steps of 3.8 Å)
    steps = rng.normal(size=(n, 3))
    pos = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    assert block_rows(n) * n <= PAIR_BUDGET
    tracemalloc.start()
    try:
        source, target = radius_edges(pos, 7.0)
        knn_source, _ = knn_edges(pos, 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the full 5000 x 5000 x 3 difference array alone would be 600 MB
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert len(knn_source) == n * 16
    # the blocks found the same pairs as a direct check on a sample of targets
    sample = rng.choice(n, 50, replace=False)
    for i in sample.tolist():
        d = np.linalg.norm(pos - pos[i], axis=1)
        expected = set(np.flatnonzero((d < 7.0) & (np.arange(n) != i)).tolist())
        assert set(source[target == i].tolist()) == expected


def test_featurize_returns_one_graph_per_chain(structures_dir):
    path = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    graphs = protsteps.featurize(path)
    assert [(g.chain_id, g.num_nodes) for g in graphs] == [("A", 124), ("B", 124)]
    assert all(g.source == str(path) for g in graphs)
    (only_b,) = protsteps.featurize(f"{path}:B", knn=8)
    assert only_b.chain_id == "B"
    batch = protsteps.collate(graphs)
    assert batch.num_graphs == 2 and batch.ptr.tolist() == [0, 124, 248]
    # mmCIF through the reference reader gives the same graph as the columnar one
    cif = structures_dir / "biopython" / "1A8O.cif"
    (fast,) = protsteps.featurize(cif)
    (reference,) = protsteps.featurize(cif, reader="biopython")
    assert torch.equal(fast.edge_index, reference.edge_index)
    assert torch.equal(fast.backbone, reference.backbone)


def test_featurize_errors_name_the_file_and_reason(tmp_path, structures_dir):
    empty = tmp_path / "empty.pdb"
    empty.write_bytes(b"")
    with pytest.raises(StructureError, match=r"empty\.pdb: empty file"):
        protsteps.featurize(empty)
    with pytest.raises(StructureError, match="fewer than min_residues"):
        protsteps.featurize(structures_dir / "masif" / "1A2K_AB.pdb.gz", min_residues=1000)
    with pytest.raises(ConfigError, match="unknown key 'radios'"):
        protsteps.featurize(structures_dir / "masif" / "1A2K_AB.pdb.gz", radios=3.0)


def compact_chain(n: int, seed: int = 0) -> np.ndarray:
    """CA-like points at protein density (about one per 120 Å^3) in a sphere, [n, 3]."""
    rng = np.random.default_rng(seed)
    radius = (3 * 120.0 * n / (4 * np.pi)) ** (1 / 3)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * radius * rng.uniform(size=(n, 1)) ** (1 / 3)


def test_cell_search_matches_the_full_distance_matrix():
    from protsteps_structure.neighbours import CELL_SEARCH_FROM

    n = CELL_SEARCH_FROM + 500
    pos = compact_chain(n)
    source, target = radius_edges(pos, 7.0)
    diff = pos[:, None, :] - pos[None, :, :]
    within = np.einsum("ijk,ijk->ij", diff, diff) < 49.0
    np.fill_diagonal(within, False)
    expected_target, expected_source = np.nonzero(within)
    assert np.array_equal(target, expected_target) and np.array_equal(source, expected_source)


def test_degenerate_structure_stays_within_memory():
    # every CA at one of two points: a search without bounds would hold n^2 pairs at once
    n = 3000
    pos = np.zeros((n, 3))
    pos[n // 2 :] = [100.0, 0.0, 0.0]
    tracemalloc.start()
    try:
        source, _ = radius_edges(pos, 7.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(source) == 2 * (n // 2) * (n // 2 - 1)
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_cell_search_hands_over_to_blocks_beyond_its_budget(monkeypatch):
    import protsteps_structure.neighbours as neighbours

    pos = compact_chain(neighbours.CELL_SEARCH_FROM + 10, seed=1)
    expected = radius_edges(pos, 7.0)
    calls = []
    blocks = neighbours._radius_edges_blocks
    monkeypatch.setattr(neighbours, "CELL_CANDIDATE_BUDGET", 1000)
    monkeypatch.setattr(neighbours, "_radius_edges_blocks", lambda *a: calls.append(1) or blocks(*a))
    got = radius_edges(pos, 7.0)
    assert calls, "the block search took over"
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_tree_search_keys_fit_in_32_bits():
    import protsteps_structure.neighbours as neighbours

    # the tree search orders its pairs by uint32 keys target * num + source
    assert neighbours.CELL_SEARCH_FROM**2 <= 1 << 32


@pytest.mark.parametrize("n", [2, 3, 40, 300, 999])
def test_tree_search_of_short_chains_matches_the_full_distance_matrix(n):
    import protsteps_structure.neighbours as neighbours

    assert n < neighbours.CELL_SEARCH_FROM
    pos = compact_chain(n, seed=n)
    # pairs exactly at the radius (not edges) and just inside it (edges)
    pos[1] = pos[0] + [7.0, 0.0, 0.0]
    if n > 2:
        pos[2] = pos[0] + [0.0, np.nextafter(7.0, 0.0), 0.0]
    source, target = radius_edges(pos, 7.0)
    diff = pos[:, None, :] - pos[None, :, :]
    within = np.einsum("ijk,ijk->ij", diff, diff) < 49.0
    np.fill_diagonal(within, False)
    expected_target, expected_source = np.nonzero(within)
    assert np.array_equal(target, expected_target) and np.array_equal(source, expected_source)
    blocks = neighbours._radius_edges_blocks(pos, 7.0, neighbours.PAIR_BUDGET)
    assert all(np.array_equal(a, b) for a, b in zip((source, target), blocks, strict=True))
