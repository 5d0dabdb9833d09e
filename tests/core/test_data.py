"""The lazy dataset over the cache and the length-aware batch sampler."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import protsteps
from protsteps.data import GraphDataset, LengthBatchSampler
from protsteps.errors import ProtstepsError
from protsteps.featurize import featurize_many

RNG_LENGTHS = np.random.default_rng(7).integers(20, 600, size=300)


@pytest.fixture(scope="module")
def report(structures_dir, tmp_path_factory):
    paths = [
        structures_dir / "masif" / "1A2K_AB.pdb.gz",
        structures_dir / "biopython" / "1A8O.cif",
        structures_dir / "mdanalysis" / "5PTI.cif.gz",
        structures_dir / "biopython" / "1LCD.pdb.gz",
    ]
    return featurize_many(paths, cache_dir=tmp_path_factory.mktemp("cache"))


def test_dataset_loads_graphs_lazily_from_the_cache(report, monkeypatch):
    dataset = GraphDataset.from_report(report)
    assert len(dataset) == len(report.ok)
    assert dataset.lengths.tolist() == [row["residues"] for row in report.ok]
    loads = []
    original = dataset.cache.load_graph
    monkeypatch.setattr(dataset.cache, "load_graph", lambda key: loads.append(key) or original(key))
    graph = dataset[1]
    assert loads == [report.ok[1]["key"]]
    assert graph.chain_id == report.ok[1]["chain"] and graph.num_nodes == report.ok[1]["residues"]
    assert graph.source == report.ok[1]["source"]


def test_dataset_from_report_json_and_min_residues(report, tmp_path):
    path = tmp_path / "report.json"
    report.write(path)
    dataset = GraphDataset.from_report(path, cache_dir=report.cache_dir, min_residues=60)
    assert all(length >= 60 for length in dataset.lengths)
    assert len(dataset) == sum(r["residues"] >= 60 for r in report.ok)
    assert dataset[0].num_nodes == dataset.lengths[0]
    other = GraphDataset.from_report(json.loads(path.read_text()), cache_dir=tmp_path / "empty")
    with pytest.raises(ProtstepsError, match=r"missing from .*run protsteps featurize again"):
        other[0]
    with pytest.raises(ProtstepsError, match="not a readable featurize report"):
        GraphDataset.from_report(tmp_path / "nothing.json")


def test_loader_collates_batches(report):
    dataset = GraphDataset.from_report(report)
    sampler = LengthBatchSampler(dataset.lengths, max_residues=300, seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=protsteps.collate)
    batches = list(loader)
    assert sum(b.num_graphs for b in batches) == len(dataset)
    for batch in batches:
        assert batch.num_graphs == 1 or batch.num_graphs * int(batch.lengths.max()) <= 300


@pytest.mark.parametrize(("budget", "batch_size"), [(2000, 0), (2000, 5), (0, 7)])
def test_every_chain_once_per_epoch_within_the_budget(budget, batch_size):
    sampler = LengthBatchSampler(RNG_LENGTHS, max_residues=budget, batch_size=batch_size, seed=3)
    batches = list(sampler)
    flat = sorted(itertools.chain.from_iterable(batches))
    assert flat == list(range(len(RNG_LENGTHS)))
    for batch in batches:
        if batch_size:
            assert len(batch) <= batch_size
        if budget and len(batch) > 1:
            assert len(batch) * RNG_LENGTHS[batch].max() <= budget
    if budget:
        # packing by length keeps batches full: few chains are wasted as padding
        padded = sum(len(b) * RNG_LENGTHS[b].max() for b in batches)
        assert RNG_LENGTHS.sum() / padded > 0.8


def test_long_chain_gets_a_batch_of_its_own():
    sampler = LengthBatchSampler([50, 5000, 60, 70], max_residues=1000, seed=0)
    assert [1] in list(sampler)


def test_deterministic_given_seed_and_epoch():
    def epoch_batches(seed, epoch):
        sampler = LengthBatchSampler(RNG_LENGTHS, max_residues=2000, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(0, 3) == epoch_batches(0, 3)
    assert epoch_batches(0, 3) != epoch_batches(0, 4)
    assert epoch_batches(0, 3) != epoch_batches(1, 3)
    ordered = LengthBatchSampler(RNG_LENGTHS, batch_size=10, shuffle=False)
    first, *_ = list(ordered)
    assert first == list(range(10))


def test_exact_resume_mid_epoch():
    reference = LengthBatchSampler(RNG_LENGTHS, max_residues=1500, seed=5)
    reference.set_epoch(2)
    full = list(reference)

    interrupted = LengthBatchSampler(RNG_LENGTHS, max_residues=1500, seed=5)
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    first = [next(iterator) for _ in range(4)]
    state = interrupted.state_dict()
    assert state == {"seed": 5, "epoch": 2, "position": 4}

    resumed = LengthBatchSampler(RNG_LENGTHS, max_residues=1500, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a loop that calls set_epoch on resume stays where it was
    assert first + list(resumed) == full
    assert resumed.position == 0, "a finished epoch starts over"
    with pytest.raises(ValueError, match="seed"):
        LengthBatchSampler(RNG_LENGTHS, max_residues=1500, seed=6).load_state_dict(state)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_share_out_the_batches(drop_last):
    world = 3
    samplers = [
        LengthBatchSampler(
            RNG_LENGTHS, max_residues=2500, seed=9, rank=r, world_size=world, drop_last=drop_last
        )
        for r in range(world)
    ]
    single = list(LengthBatchSampler(RNG_LENGTHS, max_residues=2500, seed=9))
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1, "every rank takes the same number of steps"
    assert all(len(s) == len(per_rank[0]) for s in samplers)
    seen = [tuple(b) for batches in per_rank for b in batches]
    if drop_last:
        assert len(set(seen)) == len(seen) and len(seen) == len(single) - len(single) % world
    else:
        assert {tuple(b) for b in single} == set(seen)
        assert len(seen) == len(single) + (-len(single) % world)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"max_residues .* or batch_size"):
        LengthBatchSampler([10, 20])
    with pytest.raises(ValueError, match="rank 2 is not in"):
        LengthBatchSampler([10, 20], batch_size=1, rank=2, world_size=2)
