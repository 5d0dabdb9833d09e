"""Warnings about a protein on two sides of a split, and about tiny test sets: unit checks,
then finetune on the shared labelled sets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from protsteps.cli import main
from protsteps.downstream import read_manifest
from protsteps.downstream._labels import LabelledChain
from protsteps.downstream._leakage import (
    find_pdb_chain_column,
    leakage_notes,
    normalize_pdb_chain,
    small_test_note,
)


def test_pdb_chain_spellings_are_one_chain():
    assert {normalize_pdb_chain(v) for v in ("1AVX_B", "1avx.b", "1avxB", "1avx-B", "1AVX:b")} == {"1avx.b"}
    assert normalize_pdb_chain("P12497") is None and normalize_pdb_chain("c0003") is None


def test_the_pdb_chain_column_is_found_by_name_and_values():
    header = ["path", "chain", "pdb_chain", "label", "pdb_id", "uniprot"]
    rows = [{"pdb_chain": "1abc.a", "pdb_id": "1abc", "uniprot": "P12345"}]
    assert find_pdb_chain_column(header, rows, ["path", "chain", "label"]) == "pdb_chain"
    rows = [{"PDB": "1ABC_A"}, {"PDB": ""}]
    assert find_pdb_chain_column(["path", "PDB"], rows, ["path"]) == "PDB"
    assert find_pdb_chain_column(["path", "pdb_id"], [{"pdb_id": "1abc"}], ["path"]) is None


def rows_and_notes(rows, sequences, splits, **kwargs):
    return leakage_notes(rows, ["A"] * len(rows), sequences, splits, **kwargs)


def test_one_structure_under_two_names_or_paths_is_found(small_structures, tmp_path):
    original = small_structures[0]
    copy = tmp_path / "renamed.pdb.gz"
    shutil.copyfile(original, copy)
    link = tmp_path / "link.pdb.gz"
    os.symlink(original, link)
    other = small_structures[1]
    # different sequences, so only the file itself links them
    for twin in (copy, link):
        rows = [LabelledChain(str(original), "A", ("x",)), LabelledChain(str(twin), "A", ("x",))]
        rows.append(LabelledChain(str(other), "A", ("y",)))
        notes = rows_and_notes(rows, ["AAA", "CCC", "DDD"], ["train", "test", "valid"])
        assert len(notes) == 1 and notes[0].startswith("warning: 1 protein is in more than one split")
        assert "the same structure" in notes[0] and f"{twin.name}:A (test)" in notes[0]
        # on one side of the split: nothing to say
        assert rows_and_notes(rows, ["AAA", "CCC", "DDD"], ["train", "train", "test"]) == []
    # two chains of one file are two proteins
    rows = [LabelledChain(str(original), "A", ("x",)), LabelledChain(str(original), "B", ("x",))]
    assert leakage_notes(rows, ["A", "B"], ["AAA", "CCC"], ["train", "test"]) == []


def test_the_same_sequence_pdb_chain_or_group_links_rows(small_structures):
    a, b, c = (str(p) for p in small_structures[:3])
    same_sequence = [LabelledChain(a, None, ("x",)), LabelledChain(b, None, ("x",))]
    notes = rows_and_notes(same_sequence, ["MKV", "MKV"], ["train", "valid"])
    assert "the same sequence" in notes[0]
    same_chain = [
        LabelledChain(a, None, ("x",), pdb_chain="1avx.b"),
        LabelledChain(b, None, ("x",), pdb_chain="1avx.b"),
        LabelledChain(c, None, ("x",), group="g1"),
    ]
    notes = rows_and_notes(
        same_chain,
        ["MKV", "MKL", "MKA"],
        ["train", "test", "test"],
        pdb_chain_column="pdb_chain",
        columns=["path", "pdb_chain", "sequence_cluster"],
    )
    assert "the same pdb_chain" in notes[0]
    # the advice names the manifest's cluster column
    assert notes[0].endswith("draw the split with --group-column sequence_cluster to keep them together")
    grouped = [LabelledChain(a, None, ("x",), group="g"), LabelledChain(b, None, ("x",), group="g")]
    notes = rows_and_notes(grouped, ["MKV", "MKL"], ["train", "test"], group_column="cluster")
    assert "the same cluster" in notes[0]


def test_small_test_sets_are_warned_about():
    assert small_test_note(10) == []
    assert small_test_note(6)[0].startswith("warning: the test set has only 6 proteins")
    assert "by 0.17" in small_test_note(6)[0]
    assert "only 1 protein:" in small_test_note(1)[0]


def test_the_shared_sets_name_their_pdb_chains(labels_dir):
    data = read_manifest(labels_dir / "scop2_chains.tsv", label_column="scop2_class")
    assert data.settings["pdb_chain_column"] == "pdb_chain"
    assert sum(r.pdb_chain == "1avx.b" for r in data.rows) == 2
    data = read_manifest(labels_dir / "scop2_class_chains.tsv", label_column="scop2_class")
    assert "sequence_cluster" in data.columns and all(r.pdb_chain for r in data.rows)


@pytest.mark.slow
def test_finetune_warns_about_a_leaking_split_and_not_about_a_clustered_one(
    pretrain_run, labels_dir, graph_cache, tmp_path, capsys
):
    common = ["--label-column", "scop2_class", "--from", str(pretrain_run), "--mode", "probe"]
    common += ["--epochs", "1", "--cache-dir", str(graph_cache), "-q"]
    # the tour's old command: 1AVX_B and 1avx_B (one PDB chain) land in train and test
    leaky = tmp_path / "leaky"
    assert main(["finetune", str(labels_dir / "scop2_chains.tsv"), "--out", str(leaky), *common]) == 0
    err = capsys.readouterr().err
    notes = json.loads((leaky / "metrics.json").read_text())["notes"]
    leak = [n for n in notes if "in more than one split" in n]
    assert len(leak) == 1 and leak[0] in err
    assert "1AVX_B.pdb.gz:B" in leak[0] and "1avx_B.pdb.gz:B" in leak[0] and "the same pdb_chain" in leak[0]
    assert "--group-column pdb_chain" in leak[0]
    small = [n for n in notes if n.startswith("warning: the test set has only 6 proteins")]
    assert len(small) == 1 and small[0] in err

    # the sequence-cluster set, grouped by cluster, with a test share of ten or more proteins
    clean = tmp_path / "clean"
    args = ["finetune", str(labels_dir / "scop2_class_chains.tsv"), "--out", str(clean), *common]
    assert main([*args, "--group-column", "sequence_cluster", "--split", "0.6,0.2,0.2"]) == 0
    assert "warning" not in capsys.readouterr().err
    metrics = json.loads((clean / "metrics.json").read_text())
    assert metrics["counts"]["test"] >= 10
    assert not [n for n in metrics["notes"] if n.startswith("warning")]


def test_written_manifests_keep_the_pdb_chain(labels_dir, tmp_path):
    data = read_manifest(labels_dir / "scop2_chains.tsv", label_column="scop2_class")
    data.write(tmp_path / "m.tsv")
    again = read_manifest(tmp_path / "m.tsv", label_column="scop2_class")
    assert [r.pdb_chain for r in again.rows] == [r.pdb_chain for r in data.rows]
    assert Path(again.rows[0].path).is_file()
