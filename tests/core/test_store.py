"""The graph store: shard files and an SQLite index, shared by processes, resumable after a
kill, and a start over an unchanged corpus that reads no input file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

import protsteps
import protsteps.store as store_module
from protsteps.data import GraphDataset, LengthBatchSampler
from protsteps.featurize import featurize_many
from protsteps.store import GraphStore, decode_record, encode_record

NAMES = ("1A2K_C", "1AVX_B", "1BRS_A", "1ERN_A", "1ERN_B", "1EWY_A", "1F6M_A", "1A2K_AB")


@pytest.fixture()
def corpus(tmp_path, structures_dir) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in NAMES:  # copy2 keeps the files' old times, as for a corpus made long ago
        shutil.copy2(structures_dir / "masif" / f"{name}.pdb.gz", folder / f"{name}.pdb.gz")
    return folder


def test_records_round_trip_every_field(structures_dir):
    graphs = protsteps.featurize(structures_dir / "masif" / "1A2K_AB.pdb.gz")
    entry = decode_record(encode_record("x.pdb.gz", graphs, ["x.pdb.gz: chain C: too short"]))
    assert entry["source"] == "x.pdb.gz" and entry["errors"] == ["x.pdb.gz: chain C: too short"]
    for graph, chain in zip(graphs, entry["chains"], strict=True):
        back = protsteps.ProteinGraph.from_dict(chain["graph"])
        for name, value in graph.to_dict().items():
            other = getattr(back, name)
            if isinstance(value, torch.Tensor):
                assert value.dtype == other.dtype and torch.equal(value, other), name
            else:
                assert value == other, name
    with pytest.raises(ValueError, match="not a protsteps graph record"):
        decode_record(b"\x80\x02not a record")


def _chain_headers(record: bytes) -> list[dict]:
    """The chains of a record's JSON header (magic, length, header)."""
    import json
    import struct

    (length,) = struct.unpack("<I", record[4:8])
    return json.loads(record[8 : 8 + length])["chains"]


@pytest.mark.parametrize(
    "structure",
    ["masif/1A2K_AB.pdb.gz", "biopython/1A8O.cif", "mdanalysis/3KPR.cif.gz", "db55_unbound/1A2K_l_u.pdb.gz"],
)
def test_edge_geometry_is_recomputed_bit_for_bit(structures_dir, structure):
    """residue_graph's edge distances and directions are left out of records (recomputing
    them gives the same bits), and read back equal; edge values a featurizer computed some
    other way are stored, and read back equal too."""
    path = structures_dir / structure
    graphs = protsteps.featurize(path)
    record = encode_record("x", graphs, [])
    chains = decode_record(record)["chains"]
    for graph, chain in zip(graphs, chains, strict=True):
        back = chain["graph"]
        assert torch.equal(back["edge_distance"], graph.edge_distance)
        assert torch.equal(back["edge_vector"], graph.edge_vector)
    assert all("edge_distance" not in c["fields"] for c in _chain_headers(record))
    import dataclasses

    other = dataclasses.replace(graphs[0], edge_distance=graphs[0].edge_distance * 1.5)
    stored = encode_record("y", [other], [])
    assert "edge_distance" in _chain_headers(stored)[0]["fields"]
    assert torch.equal(decode_record(stored)["chains"][0]["graph"]["edge_distance"], other.edge_distance)


def test_edge_geometry_is_known_by_identity_until_changed_in_place(structures_dir):
    """What ``edge_geometry`` made is left out of a record without recomputing it, only while
    the very tensors it made and used are unchanged: a graph whose positions moved in place
    afterwards keeps its own edge values in the record (they no longer follow from pos)."""
    import gc

    from protsteps import graph as graph_module

    graph = protsteps.featurize(structures_dir / "masif" / "1A2K_AB.pdb.gz")[0]
    values = graph.to_dict()
    assert graph_module.made_by_edge_geometry(
        graph.pos, graph.edge_index, graph.edge_distance, graph.edge_vector
    )
    assert not graph_module.made_by_edge_geometry(
        graph.pos.clone(), graph.edge_index, graph.edge_distance, graph.edge_vector
    ), "another pos tensor, even with the same values, is not the one it was made from"
    assert not graph_module.made_by_edge_geometry(
        graph.pos, graph.edge_index, graph.edge_distance.clone(), graph.edge_vector
    )
    assert store_module._derived_geometry(values)

    original = graph.edge_distance.clone()
    graph.pos[:5] += 1.0  # in place, through torch: the version counter moves
    assert not graph_module.made_by_edge_geometry(
        graph.pos, graph.edge_index, graph.edge_distance, graph.edge_vector
    )
    record = encode_record("x", [graph], [])
    assert "edge_distance" in _chain_headers(record)[0]["fields"], "stored: recomputing differs now"
    assert torch.equal(decode_record(record)["chains"][0]["graph"]["edge_distance"], original)

    # new memory under the same tensor is a change too; under inference mode nothing is known
    distance, vector = graph_module.edge_geometry(graph.pos, graph.edge_index)
    graph.pos.data = graph.pos.clone() + 1.0  # same object, same version counter
    assert not graph_module.made_by_edge_geometry(graph.pos, graph.edge_index, distance, vector)
    with torch.inference_mode():
        pos = graph.pos.clone()
        distance, vector = graph_module.edge_geometry(pos, graph.edge_index)
        assert not graph_module.made_by_edge_geometry(pos, graph.edge_index, distance, vector)
    del distance, vector

    # a table entry lives as long as the distance tensor it was made for
    made = len(graph_module._MADE)
    distance, _ = graph_module.edge_geometry(graph.pos, graph.edge_index)
    assert len(graph_module._MADE) == made + 1
    del distance
    gc.collect()
    assert len(graph_module._MADE) == made


def test_an_unchanged_corpus_is_answered_from_the_index_without_reading_a_file(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = featurize_many([corpus], cache_dir=cache)
    records, shards = GraphStore(cache).counts()
    assert records == len(NAMES) and shards == 1, "one run, one shard"
    import protsteps.structure._io as io_module

    reads: list[str] = []
    original = io_module.read_bytes
    monkeypatch.setattr(
        io_module, "read_bytes", lambda path, *a, **k: reads.append(str(path)) or original(path, *a, **k)
    )
    second = featurize_many([corpus], cache_dir=cache)
    assert reads == [] and second.cache_hits == len(NAMES)
    assert second.ok == first.ok
    # a file whose bytes change is read again (its size, times or inode differ)
    changed = corpus / "1BRS_A.pdb.gz"
    changed.write_bytes((corpus / "1ERN_A.pdb.gz").read_bytes())
    third = featurize_many([corpus], cache_dir=cache)
    assert reads == [str(changed)]
    assert (
        next(r for r in third.ok if r["source"] == str(changed))["key"]
        == next(r for r in first.ok if r["source"] == str(corpus / "1ERN_A.pdb.gz"))["key"]
    ), "the same bytes, the same entry"


def test_two_processes_write_one_store_at_once(corpus, tmp_path):
    cache = tmp_path / "cache"
    files = sorted(str(p) for p in corpus.iterdir())
    code = textwrap.dedent(
        """
        import sys
        from protsteps.featurize import featurize_many
        report = featurize_many(sys.argv[2:], cache_dir=sys.argv[1])
        print(len(report.ok), report.cache_hits)
        """
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache), *part],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in (files[::2], files[1::2])
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    union = featurize_many([corpus], cache_dir=cache)
    assert union.cache_hits == len(NAMES), (outputs, union.to_json())
    assert GraphStore(cache).counts() == (len(NAMES), 2), outputs


def test_committed_shards_survive_a_kill_and_its_open_shard_is_cleared(structures_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "SHARD_RECORDS", 2)
    graphs = protsteps.featurize(structures_dir / "masif" / "1BRS_A.pdb.gz")
    store = GraphStore(tmp_path / "cache")
    for index in range(5):
        store.store_entry(f"{index:064x}", f"in/{index}.pdb", graphs, [])
    # five records, shards of two: two committed, the fifth in an open shard when "killed"
    (open_shard,) = list((tmp_path / "cache" / "shards").glob("*.tmp"))
    reader = GraphStore(tmp_path / "cache")
    assert [reader.lookup(f"{i:064x}") is not None for i in range(5)] == [True] * 4 + [False]
    assert torch.equal(reader.load_graph(f"{3:064x}:{graphs[0].chain_id}").pos, graphs[0].pos)
    # a later start removes the open shard of a writer that is gone (same host, dead pid)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = open_shard.with_name(
        open_shard.name.replace(f".{os.getpid()}.tmp", f".{dead.stdout.strip()}.tmp")
    )
    open_shard.rename(stale)
    GraphStore(tmp_path / "cache").check_writable()
    assert not stale.exists()


def test_dataloader_workers_read_the_store(corpus, tmp_path):
    report = featurize_many([corpus], cache_dir=tmp_path / "cache")
    dataset = GraphDataset.from_report(report)
    sampler = LengthBatchSampler(dataset.lengths, max_residues=2000, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=protsteps.collate, num_workers=2
    )
    seen = sorted((s, c) for batch in loader for s, c in zip(batch.sources, batch.chain_ids, strict=True))
    assert seen == sorted((str(Path(r["source"])), r["chain"]) for r in report.ok)
    # as training reads them: packed in the workers, unpacked here, equal to in-process batches
    from protsteps.graph import collate_packed

    packed = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_packed, num_workers=2
    )
    for ours, indices in zip(packed, sampler, strict=True):
        batch, direct = ours.unpack(), protsteps.collate([dataset[i] for i in indices])
        assert batch.sources == direct.sources and batch.chain_ids == direct.chain_ids
        assert torch.equal(batch.pos, direct.pos) and torch.equal(batch.edge_index, direct.edge_index)
        assert torch.equal(batch.edge_vector, direct.edge_vector) and torch.equal(batch.batch, direct.batch)


def test_shards_split_the_inputs_and_a_full_run_finds_them_all(corpus, tmp_path, capsys):
    import tarfile

    from protsteps.cli import main

    with tarfile.open(tmp_path / "extra.tar", "w") as archive:
        archive.add(corpus / "1A2K_C.pdb.gz", arcname="copy_of_1A2K_C.pdb.gz")
    inputs = [corpus, tmp_path / "extra.tar"]
    cache = tmp_path / "cache"
    parts = [featurize_many(inputs, cache_dir=cache, shard=(i, 3)) for i in range(3)]
    chains = [(r["source"], r["chain"]) for part in parts for r in part.ok]
    assert len(chains) == len(set(chains)), "no input in two shares"
    full = featurize_many(inputs, cache_dir=cache)
    assert sorted(chains) == sorted((r["source"], r["chain"]) for r in full.ok)
    assert full.cache_hits == full.files
    # each input goes to the share its label hashes to (CRC-32 modulo the count), so ranks
    # agree on the split without talking; which shares are empty depends on the paths
    for index, part in enumerate(parts):
        for row in part.ok:
            assert zlib.crc32(row["source"].encode("utf-8", "surrogateescape")) % 3 == index, row["source"]
    out = tmp_path / "run"
    args = ["featurize", str(corpus), "--out", str(out), "--cache-dir", str(cache)]
    # a share that holds some of the folder's files (which do depends on the temporary path)
    index = next(i for i, part in enumerate(parts) if any("extra.tar" not in r["source"] for r in part.ok))
    assert main([*args, "--shard", f"{index}/3"]) == 0
    assert main([*args, "--shard", "3/3"]) == 2
    assert "--shard: expected I/N with 0 <= I < N" in capsys.readouterr().err


def test_a_chain_of_a_many_chain_file_is_read_alone(structures_dir, tmp_path):
    """Reading one chain decodes that chain only, and gives the chain itself."""
    path = structures_dir / "mdanalysis" / "3KPR.cif.gz"
    direct = protsteps.featurize(path)
    record = encode_record(str(path), direct, [])
    assert len(direct) > 2
    wanted = direct[1].chain_id
    alone = decode_record(record, only=wanted)["chains"]
    assert [c["chain"] for c in alone] == [wanted]
    report = featurize_many([path], cache_dir=tmp_path / "cache")
    dataset = GraphDataset.from_report(report)
    for index, graph in enumerate(direct):
        back = dataset[index]
        assert back.chain_id == graph.chain_id
        for name, value in graph.to_dict().items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(getattr(back, name), value), name
