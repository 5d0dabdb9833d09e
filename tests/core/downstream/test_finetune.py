"""protsteps.downstream.finetune through the Python API, on real structures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from protsteps.downstream import (
    ClassificationHead,
    FinetuneConfig,
    finetune,
    read_manifest,
    scratch_backbone,
)
from protsteps.downstream._finetune import class_coverage_notes
from protsteps.errors import ProtstepsError
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config

pytestmark = pytest.mark.slow


def scratch(teacher: str = "none", *sets: str):
    return load_run_config(
        None, default_catalog(), components={"teacher": teacher}, sets=["encoder.hidden_dim=16", *sets]
    )


def manifest(path: Path, rows: list[list[str]], header=("path", "chain", "label", "split")) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def settings(graph_cache: Path, **values) -> FinetuneConfig:
    return FinetuneConfig(**{"epochs": 3, "batch_size": 3, "cache_dir": str(graph_cache), **values})


def test_multi_label_targets_are_scored_with_fmax_and_micro_aupr(small_structures, graph_cache, tmp_path):
    labels = ["a;b", "a", "b", "a;c", "c;b", "a;c"]
    splits = ["train", "train", "train", "train", "valid", "test"]
    rows = [[str(p), "", y, s] for p, y, s in zip(small_structures, labels, splits, strict=True)]
    data = read_manifest(manifest(tmp_path / "m.tsv", rows))
    result = finetune(data, None, tmp_path / "run", settings(graph_cache, mode="probe"), scratch=scratch())
    metrics = result.metrics
    assert metrics["task"] == "multi" and metrics["classes"] == ["a", "b", "c"]
    assert metrics["selection"]["metric"] == "valid fmax"
    for part in ("valid", "test"):
        assert {"fmax", "fmax_threshold", "micro_aupr", "loss", "support"} <= set(metrics[part])
        assert 0.0 <= metrics[part]["fmax"] <= 1.0
    assert metrics["test"]["support"] == {"a": 1, "b": 0, "c": 1}
    assert "confusion_matrix" not in metrics["test"]
    assert (tmp_path / "run" / "learning_curve.png").is_file()
    assert not (tmp_path / "run" / "confusion_matrix.png").exists()
    predictions = (tmp_path / "run" / "predictions.tsv").read_text().splitlines()
    assert len(predictions) == 3 and predictions[2].split("\t")[4] == "a;c"


def test_unusable_rows_are_reported_with_reasons_never_dropped(
    small_structures, structures_dir, graph_cache, tmp_path, capsys
):
    garbage = tmp_path / "garbage.pdb"
    garbage.write_text("hello\n")
    rows = [
        [str(small_structures[0]), "A", "x", ""],
        [str(small_structures[1]), "", "y", ""],
        [str(small_structures[2]), "", "x", ""],
        [str(small_structures[4]), "", "y", ""],
        [str(small_structures[5]), "", "x", ""],
        [str(small_structures[3]), "Z", "x", ""],
        [str(garbage), "", "y", ""],
        [str(structures_dir / "masif" / "1A2K_AB.pdb.gz"), "", "x", ""],
        # found missing while reading the labels, before the others fail to featurize
        ["missing.pdb", "", "y", ""],
    ]
    data = read_manifest(manifest(tmp_path / "m.tsv", rows))
    result = finetune(data, None, tmp_path / "run", settings(graph_cache, mode="probe"), scratch=scratch())
    assert result.metrics["counts"]["labelled_rows"] == 9
    assert result.metrics["counts"]["skipped"] == 4 and result.metrics["counts"]["proteins"] == 5
    with open(tmp_path / "run" / "skipped.tsv") as fh:
        rows_out = list(csv.DictReader(fh, delimiter="\t"))
    # in label-file order, whichever step found the problem
    assert [r["origin"] for r in rows_out] == ["m.tsv:7", "m.tsv:8", "m.tsv:9", "m.tsv:10"]
    skipped = {r["origin"]: r["reason"] for r in rows_out}
    assert skipped["m.tsv:10"].startswith("structure file not found")
    assert "no protein chain Z (protein chains: F)" in skipped["m.tsv:7"]
    assert "garbage.pdb: no ATOM or HETATM records" in skipped["m.tsv:8"]
    assert "holds 2 chains (A, B); name one in the chain column" in skipped["m.tsv:9"]
    out = capsys.readouterr().out
    assert "4 of 9 labelled rows cannot be used (first: m.tsv:7: " in out
    assert "no protein chain Z" in out.split("(first: m.tsv:7: ")[1].split(";")[0]
    # one row per split at least was drawn, stratified, with seed 0
    assert {r["split"] for r in csv.DictReader(open(tmp_path / "run" / "splits.tsv"), delimiter="\t")} == {
        "train",
        "valid",
        "test",
    }
    # the folder holds a finetune run now: a second run into it is refused
    with pytest.raises(ProtstepsError, match="already holds a finetune run"):
        finetune(data, None, tmp_path / "run", settings(graph_cache), scratch=scratch())


def test_given_splits_without_validation_rows_draw_them_from_training(
    small_structures, graph_cache, tmp_path
):
    rows = [[str(p), "", "xy"[i % 2], "test" if i == 5 else "train"] for i, p in enumerate(small_structures)]
    data = read_manifest(manifest(tmp_path / "m.tsv", rows))
    result = finetune(data, None, tmp_path / "run", settings(graph_cache, mode="probe"), scratch=scratch())
    counts = result.metrics["counts"]
    assert (counts["train"], counts["valid"], counts["test"]) == (4, 1, 1)
    assert any("gives no valid rows: drew 1 from the training rows" in n for n in result.metrics["notes"])
    # one protein each in valid and test: each lacks a class, and metrics.json says so
    assert "1 class has no test protein and is not scored there: x" in result.metrics["notes"]
    assert sum("class has no valid protein" in n for n in result.metrics["notes"]) == 1


def test_class_coverage_notes():
    labels = {"train": [["a"], ["a", "b"]], "valid": [["a"]], "test": [["c"], ["b"]]}
    assert class_coverage_notes(["a", "b", "c"], labels) == [
        "1 class has no training protein and cannot be learned: c",
        "2 classes have no valid protein and are not scored there: b, c",
        "1 class has no test protein and is not scored there: a",
    ]
    many = [f"k{i:02d}" for i in range(12)]
    notes = class_coverage_notes(many, {"train": [], "valid": [many], "test": [many]})
    assert notes == [
        f"12 classes have no training protein and cannot be learned: {', '.join(many[:10])} and 2 more"
    ]


def test_probe_freezes_the_encoder_full_trains_it_and_the_teacher_never_changes(
    small_structures, graph_cache, tiny_esm_weights, tmp_path
):
    rows = [
        [str(p), "", "xy"[i % 2], (["train"] * 4 + ["valid", "test"])[i]]
        for i, p in enumerate(small_structures)
    ]
    data = read_manifest(manifest(tmp_path / "m.tsv", rows))
    config = scratch("esm", f'teacher.weights="{tiny_esm_weights}"')
    for mode in ("probe", "full"):
        torch.manual_seed(0)
        backbone = scratch_backbone(config, default_catalog())
        assert backbone.teacher is not None and backbone.record["teacher"]["name"] == "esm"
        encoder_before = {k: v.clone() for k, v in backbone.encoder.state_dict().items()}
        teacher_before = {k: v.clone() for k, v in backbone.teacher.state_dict().items()}
        finetune(
            data, backbone, tmp_path / mode, settings(graph_cache, mode=mode, epochs=2), show_progress=False
        )
        teacher_after = backbone.teacher.state_dict()
        assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
        saved = torch.load(tmp_path / mode / "encoder.pt", weights_only=True)["state_dict"]
        changed = [k for k in encoder_before if not torch.equal(encoder_before[k], saved[k])]
        assert (changed == []) == (mode == "probe"), changed


def test_the_same_seed_gives_the_same_run(small_structures, graph_cache, tmp_path):
    rows = [[str(p), "", "xy"[i % 2], ""] for i, p in enumerate(small_structures)]
    data = read_manifest(manifest(tmp_path / "m.tsv", rows))
    histories = []
    for name in ("a", "b"):
        result = finetune(
            data, None, tmp_path / name, settings(graph_cache, mode="probe", seed=5), scratch=scratch()
        )
        histories.append([{k: v for k, v in h.items() if k != "seconds"} for h in result.metrics["history"]])
    assert histories[0] == histories[1]
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert first["seed"] == 5 and first["split_seed"] == 5


def test_label_problems_are_errors(small_structures, graph_cache, tmp_path):
    one_class = read_manifest(manifest(tmp_path / "a.tsv", [[str(p), "", "x", ""] for p in small_structures]))
    with pytest.raises(ProtstepsError, match=r"at least 2 classes, found \['x'\]"):
        finetune(one_class, None, tmp_path / "a", settings(graph_cache), scratch=scratch())
    several = read_manifest(manifest(tmp_path / "b.tsv", [[str(p), "", "x;y", ""] for p in small_structures]))
    with pytest.raises(ProtstepsError, match=r"b.tsv:2: 2 labels \(x;y\) but task = single"):
        finetune(several, None, tmp_path / "b", settings(graph_cache, task="single"), scratch=scratch())


def test_the_head_returns_plain_logits():
    """No tanh before the loss: on separable embeddings the logits grow past 1."""
    torch.manual_seed(0)
    head = ClassificationHead(4, 2, hidden=8, dropout=0.0)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    optimizer = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        optimizer.step()
    assert head(x).abs().max() > 3.0
