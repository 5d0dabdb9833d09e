"""One chain is one labelled row (issue 12, deliverable 6): repeats with the same label are
merged with a warning, repeats with different labels or on two sides of a split are refused
naming the file, the chain and both lines; drawn splits assign each chain once. On real
label tables of ../shared/data, copied and edited."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from protsteps.cli import main
from protsteps.downstream._labels import ManifestError, merge_duplicate_rows, read_manifest


def real_rows(shared_data: Path, count: int | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """The rows of the real SCOP2 class table, with absolute structure paths."""
    table = shared_data / "labels" / "scop2_class_chains.tsv"
    with open(table, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        rows = list(reader)
        header = list(reader.fieldnames or [])
    for row in rows:
        row["path"] = os.path.normpath(table.parent / row["path"])
    return header, rows[:count] if count else rows


def write_table(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, header, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_repeated_row_with_the_same_label_is_merged_with_a_warning(shared_data, tmp_path):
    header, rows = real_rows(shared_data)
    repeated = rows[4]
    table = write_table(tmp_path / "labels.tsv", header, [*rows, dict(repeated)])
    data = read_manifest(table, label_column="scop2_class")
    assert len(data.rows) == len(rows) + 1
    merged = merge_duplicate_rows(data)
    assert len(merged.rows) == len(rows)
    assert [r.origin for r in merged.rows] == [r.origin for r in data.rows[:-1]]
    assert merged.notes == [
        f"warning: chain {repeated['chain']} of {repeated['path']} is listed 2 times with the same label "
        f"(labels.tsv:6, labels.tsv:{len(rows) + 2}); used once"
    ]
    assert data.notes == []  # the set read is left as it was
    # a set without repeats comes back as it is
    assert merge_duplicate_rows(merged) is merged


def test_two_names_of_one_file_are_one_chain(shared_data, tmp_path):
    header, rows = real_rows(shared_data, 6)
    link = tmp_path / "link.pdb.gz"
    link.symlink_to(rows[2]["path"])
    table = write_table(tmp_path / "labels.tsv", header, [*rows, {**rows[2], "path": str(link)}])
    merged = merge_duplicate_rows(read_manifest(table, label_column="scop2_class"))
    assert len(merged.rows) == 6 and "listed 2 times with the same label" in merged.notes[0]


def test_conflicting_labels_for_one_chain_are_refused_naming_both_lines(shared_data, tmp_path):
    header, rows = real_rows(shared_data)
    conflict = {**rows[7], "scop2_class": "1000004"}
    assert rows[7]["scop2_class"] != "1000004"
    table = write_table(tmp_path / "labels.tsv", header, [*rows, conflict])
    with pytest.raises(ManifestError) as caught:
        merge_duplicate_rows(read_manifest(table, label_column="scop2_class"))
    assert str(caught.value) == (
        f"{table}: chain {rows[7]['chain']} of {rows[7]['path']} is listed twice with different labels: "
        f"'{rows[7]['scop2_class']}' (labels.tsv:9) and '1000004' (labels.tsv:{len(rows) + 2}); keep one "
        "row per chain with its label"
    )


def test_multi_labels_in_another_order_are_the_same_label(shared_data, tmp_path):
    header, rows = real_rows(shared_data, 6)
    both = [{**rows[1], "scop2_class": "1000000;1000001"}, {**rows[1], "scop2_class": "1000001; 1000000"}]
    table = write_table(tmp_path / "labels.tsv", header, [rows[0], *both])
    merged = merge_duplicate_rows(read_manifest(table, label_column="scop2_class"))
    assert len(merged.rows) == 2 and merged.rows[1].labels == ("1000000", "1000001")


def test_a_chain_on_two_sides_of_a_split_is_refused(shared_data, tmp_path):
    header, rows = real_rows(shared_data, 10)
    for i, row in enumerate(rows):
        row["split"] = ("train", "valid", "test")[i % 3]
    straddling = {**rows[3], "split": "test"}
    assert rows[3]["split"] == "train"
    table = write_table(tmp_path / "labels.tsv", [*header, "split"], [*rows, straddling])
    with pytest.raises(ManifestError) as caught:
        merge_duplicate_rows(read_manifest(table, label_column="scop2_class"))
    message = str(caught.value)
    assert message.startswith(f"{table}: chain {rows[3]['chain']} of {rows[3]['path']} is listed twice in")
    assert "different splits: train (labels.tsv:5) and test (labels.tsv:12)" in message
    assert message.endswith("a chain must be on one side of a split: keep one row per chain")
    # the same split twice is a repeat like any other
    table = write_table(tmp_path / "labels.tsv", [*header, "split"], [*rows, dict(rows[3])])
    assert len(merge_duplicate_rows(read_manifest(table, label_column="scop2_class")).rows) == 10


def test_finetune_refuses_conflicts_before_writing_and_merges_repeats(
    shared_data, small_structures, tmp_path, capsys
):
    header, rows = real_rows(shared_data)
    rows = [r for r in rows if r["scop2_class"] in ("1000001", "1000003")][:14]
    common = ["--from", "none", "--label-column", "scop2_class", "--epochs", "1", "--teacher", "none"]
    common += ["--set", "encoder.hidden_dim=16", "--cache-dir", str(tmp_path / "cache"), "-q"]

    conflict = write_table(tmp_path / "conflict.tsv", header, [*rows, {**rows[2], "scop2_class": "1000003"}])
    out = tmp_path / "refused"
    assert main(["finetune", str(conflict), "--out", str(out), *common]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"error: {conflict}: chain {rows[2]['chain']} of {rows[2]['path']} is listed twice" in err
    assert not out.exists() and not (tmp_path / "cache").exists()  # before any work

    repeated = write_table(tmp_path / "repeated.tsv", header, [*rows, dict(rows[2]), dict(rows[5])])
    out = tmp_path / "run"
    assert main(["finetune", str(repeated), "--out", str(out), *common]) == 0
    err = capsys.readouterr().err
    assert f"warning: chain {rows[2]['chain']} of {rows[2]['path']} is listed 2 times" in err
    metrics = json.loads((out / "metrics.json").read_text())
    counts = metrics["counts"]
    assert counts["train"] + counts["valid"] + counts["test"] == len(rows)  # each chain once
    lines = (out / "splits.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["split", "origin", "path", "chain"]
    chains = [tuple(line.split("\t")[2:4]) for line in lines[1:]]
    assert len(chains) == len(rows) == len(set(chains))  # every chain once, in one split
