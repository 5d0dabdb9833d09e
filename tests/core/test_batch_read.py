"""Reading a batch at once (``GraphDataset.__getitems__``, ``GraphStore.read_packed``) gives,
bit for bit, what collating the chains read one by one gives, and the same errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import protsteps
from protsteps.data import GraphDataset, LengthBatchSampler
from protsteps.errors import ProtstepsError
from protsteps.featurize import featurize_many
from protsteps.graph import CollatedGraphs, PackedBatch, collate, collate_packed
from protsteps.store import GraphStore

SINGLE = ("1A2K_C", "1AVX_B", "1BRS_A", "1ERN_A", "1EWY_A", "1F6M_A")


def _key(dataset: GraphDataset, index: int) -> str:
    return dataset.entry(index)["key"]


@pytest.fixture(scope="module")
def store(structures_dir, tmp_path_factory) -> dict:
    """Single chains, a two-chain complex (1A2K_AB), a many-chain mmCIF (3KPR), and one
    record whose edge geometry is stored (not recomputable to the same bits)."""
    cache = tmp_path_factory.mktemp("cache")
    paths = [structures_dir / "masif" / f"{name}.pdb.gz" for name in SINGLE]
    paths += [structures_dir / "masif" / "1A2K_AB.pdb.gz", structures_dir / "mdanalysis" / "3KPR.cif.gz"]
    report = featurize_many(paths, cache_dir=cache)
    rows = list(report.ok)
    graph = protsteps.featurize(structures_dir / "masif" / "1BRS_A.pdb.gz")[0]
    stored = dataclasses.replace(graph, edge_distance=graph.edge_distance * 1.5)
    graphs = GraphStore(cache)
    graphs.store_entry("stored-geometry", "stored.pdb", [stored], [])
    graphs.close()
    rows.append(
        {
            "source": "stored.pdb",
            "chain": stored.chain_id,
            "residues": stored.num_nodes,
            "key": f"stored-geometry:{stored.chain_id}",
        }
    )
    return {"cache": cache, "rows": rows, "paths": paths}


@pytest.fixture()
def dataset(store) -> GraphDataset:
    return GraphDataset(store["rows"], store["cache"])


def _same_packed(ours: PackedBatch, theirs: PackedBatch) -> None:
    assert ours.layout == theirs.layout
    assert ours.buffer.dtype == theirs.buffer.dtype and torch.equal(ours.buffer, theirs.buffer)
    assert ours.sequences == theirs.sequences
    assert ours.sources == theirs.sources
    assert ours.chain_ids == theirs.chain_ids


def _same_batch(ours: protsteps.Batch, theirs: protsteps.Batch) -> None:
    for field in dataclasses.fields(theirs):
        a, b = getattr(ours, field.name), getattr(theirs, field.name)
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), field.name
        else:
            assert a == b, field.name


def _batches(dataset: GraphDataset) -> list[list[int]]:
    everything = list(range(len(dataset)))
    last = len(dataset) - 1  # the record with stored edge geometry
    complex_chains = [i for i, row in enumerate(dataset.entries) if "1A2K_AB" in row["source"]]
    many = [i for i, row in enumerate(dataset.entries) if "3KPR" in row["source"]]
    return [
        everything,
        everything[::-1],
        [0],
        [last],
        [last, 0, last],  # stored and recomputed geometry mixed, a chain twice
        complex_chains,
        complex_chains[::-1] + many[1:3],  # chains of one record, read once
        many,
        [many[2], 0, complex_chains[1], 3],
    ]


def test_a_batch_read_is_the_per_chain_collate_bit_for_bit(dataset):
    batches = _batches(dataset)
    assert len(batches[5]) == 2 and len(batches[7]) > 2, "the complex and the many-chain file are there"
    for indices in batches:
        graphs = dataset.__getitems__(indices)
        assert isinstance(graphs, CollatedGraphs), "read as one batch"
        per_chain = [dataset[i] for i in indices]
        _same_packed(collate_packed(graphs), collate_packed(per_chain))
        _same_batch(collate(graphs), collate(per_chain))
        # a collate_fn of one's own sees the same graphs
        assert len(graphs) == len(indices)
        for graph, expected in zip(graphs, per_chain, strict=True):
            for name, value in expected.to_dict().items():
                other = getattr(graph, name)
                if isinstance(value, torch.Tensor):
                    assert other.dtype == value.dtype and torch.equal(other, value), name
                else:
                    assert other == value, name
        assert graphs[-1].chain_id == per_chain[-1].chain_id
        assert [g.chain_id for g in graphs[1:]] == [g.chain_id for g in per_chain[1:]]


def test_stored_edge_geometry_is_read_and_left_out_geometry_recomputed(dataset):
    """The fixture's last record stores its edge geometry, the others leave it out; a batch
    of both takes each chain's from where it is."""
    import json
    import struct

    def header(index: int) -> dict:
        store = dataset.cache
        row = store.lookup(_key(dataset, index))
        record = store.read_record(row)
        (length,) = struct.unpack("<I", record[4:8])
        return json.loads(record[8 : 8 + length])["chains"][0]

    last = len(dataset) - 1
    assert "edge_distance" in header(last)["fields"] and not header(last).get("derived")
    assert "edge_distance" not in header(0)["fields"] and header(0)["derived"]
    batch = collate(dataset.__getitems__([0, last]))
    edges = slice(int(batch.edge_ptr[1]), int(batch.edge_ptr[2]))
    stored = dataset[last]
    assert torch.equal(batch.edge_distance[edges], stored.edge_distance)
    from protsteps.store import _edge_geometry

    recomputed, _ = _edge_geometry(stored.pos, stored.edge_index)
    assert not torch.equal(recomputed, stored.edge_distance), "the stored values are not the recomputed ones"
    first = slice(0, int(batch.edge_ptr[1]))
    assert torch.equal(batch.edge_distance[first], dataset[0].edge_distance)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_equal_per_chain_batches(dataset, workers):
    sampler = LengthBatchSampler(dataset.lengths, max_residues=1500, seed=3)
    batches = sampler.batches() + _batches(dataset)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate_packed, num_workers=workers
    )
    count = 0
    for packed, indices in zip(loader, batches, strict=True):
        _same_packed(packed, collate_packed([dataset[i] for i in indices]))
        count += 1
    assert count == len(batches)
    plain = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches[:3], collate_fn=protsteps.collate, num_workers=workers
    )
    for batch, indices in zip(plain, batches, strict=False):
        _same_batch(batch, collate([dataset[i] for i in indices]))


def test_empty_and_one_element_batches(dataset):
    assert list(dataset.__getitems__([])) == []
    with pytest.raises(ValueError, match="cannot collate an empty list of graphs"):
        collate_packed(dataset.__getitems__([]))
    for index in range(len(dataset)):
        _same_packed(collate_packed(dataset.__getitems__([index])), collate_packed([dataset[index]]))


def _flip_a_byte(cache: Path, key: str, offset_from_end: int = 100) -> None:
    row = GraphStore(cache).lookup(key)
    assert row is not None
    shard = cache / "shards" / row.shard
    data = bytearray(shard.read_bytes())
    data[row.offset + row.length - offset_from_end] ^= 0x01
    shard.write_bytes(bytes(data))


def test_a_damaged_record_in_a_batch_raises_the_per_chain_error(store, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(store["cache"], cache)
    dataset = GraphDataset(store["rows"], cache)
    victim = 2
    _flip_a_byte(cache, _key(dataset, victim))
    with pytest.raises(ProtstepsError) as per_chain:
        dataset[victim]
    assert "is damaged in" in str(per_chain.value) and _key(dataset, victim) in str(per_chain.value)
    fresh = GraphDataset(store["rows"], cache)
    with pytest.raises(ProtstepsError) as batched:
        collate_packed(fresh.__getitems__([0, 1, victim, 3]))
    assert str(batched.value) == str(per_chain.value)
    assert fresh.cache.damaged == 1, "counted once, as chain by chain"
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            GraphDataset(store["rows"], cache),
            batch_sampler=[[0, 1], [4, victim]],
            collate_fn=collate_packed,
            num_workers=workers,
        )
        with pytest.raises(ProtstepsError, match="is damaged in"):
            list(loader)
    # the batches without it still read as one
    assert isinstance(fresh.__getitems__([0, 1, 3]), CollatedGraphs)


def test_a_missing_entry_raises_the_per_chain_error(store):
    rows = [*store["rows"][:2], {**store["rows"][0], "key": "0" * 64 + ":A"}]
    dataset = GraphDataset(rows, store["cache"])
    with pytest.raises(ProtstepsError) as per_chain:
        dataset[2]
    with pytest.raises(ProtstepsError) as batched:
        dataset.__getitems__([0, 1, 2])
    assert str(batched.value) == str(per_chain.value) and "is missing from" in str(batched.value)


def test_graphs_collate_refuses_are_refused_the_same_way(store, structures_dir, tmp_path):
    """A chain whose node features are wider than its batch-mates': the batch read leaves the
    batch to collate, which refuses it as before."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(store["cache"], cache)
    graph = protsteps.featurize(structures_dir / "masif" / "1BRS_A.pdb.gz")[0]
    wide = dataclasses.replace(graph, node_attr=torch.ones(graph.num_nodes, 2))
    graphs = GraphStore(cache)
    graphs.store_entry("wide", "wide.pdb", [wide], [])
    graphs.close()
    rows = [
        *store["rows"][:2],
        {
            "source": "wide.pdb",
            "chain": wide.chain_id,
            "residues": wide.num_nodes,
            "key": f"wide:{wide.chain_id}",
        },
    ]
    dataset = GraphDataset(rows, cache)
    with pytest.raises(ValueError) as per_chain:
        collate_packed([dataset[i] for i in range(3)])
    graphs_read = dataset.__getitems__([0, 1, 2])
    assert not isinstance(graphs_read, CollatedGraphs)
    with pytest.raises(ValueError) as batched:
        collate_packed(graphs_read)
    assert str(batched.value) == str(per_chain.value)
    # alone, the wide chain reads as one batch
    _same_packed(collate_packed(dataset.__getitems__([2])), collate_packed([dataset[2]]))


def test_training_batches_read_as_one(store):
    from protsteps.training_data import TrainingData

    dataset = GraphDataset(store["rows"], store["cache"])
    sampler = LengthBatchSampler(dataset.lengths, max_residues=1500, seed=1)
    for workers in (0, 2):
        data = TrainingData(dataset, dataset, sampler, seed=1, workers=workers)
        expected = [collate([dataset[i] for i in indices]) for indices in data.sampler.batches()]
        got = list(data.train_batches(0))
        assert len(got) == len(expected)
        for ours, theirs in zip(got, expected, strict=True):
            _same_batch(ours, theirs)
    valid = list(data.valid_batches())
    assert sum(b.num_graphs for b in valid) == len(dataset)


def _edge_geometry_before(pos: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The edge geometry as the store computed it before the batch read (the reference)."""
    import numpy as np

    x, y, z = pos.numpy().T.astype(np.float64)
    source, target = edge_index.numpy()
    dx, dy, dz = x[target] - x[source], y[target] - y[source], z[target] - z[source]
    square = dx * dx
    square += dy * dy
    square += dz * dz
    distance = np.sqrt(square)
    vector = np.zeros((len(distance), 3), dtype=np.float32)
    apart = distance > 0
    with np.errstate(invalid="ignore"):  # inf / inf
        for column, delta in enumerate((dx, dy, dz)):
            vector[:, column] = np.divide(delta, distance, out=np.zeros_like(delta), where=apart)
    return torch.from_numpy(distance.astype(np.float32)), torch.from_numpy(vector)


def test_edge_geometry_keeps_its_bits_for_odd_positions(dataset):
    """Zero-length edges, an undefined (NaN) position and an infinite one give what the
    chain-by-chain computation gave before."""
    from protsteps.store import _edge_geometry

    graph = dataset[0]
    pos = graph.pos.clone()
    pos[1] = pos[0]  # a zero-length edge 0 -> 1 and 1 -> 0
    pos[2, 1] = float("nan")
    pos[3, 2] = float("inf")
    extra = torch.tensor([[0, 1, 2, 0, 3, 0, 4], [1, 0, 0, 2, 0, 3, 4]])
    edge_index = torch.cat([graph.edge_index, extra], dim=1)
    ours, before = _edge_geometry(pos, edge_index), _edge_geometry_before(pos, edge_index)
    for a, b in zip(ours, before, strict=True):
        assert a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))
