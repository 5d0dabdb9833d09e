"""End to end through the CLI: pretrain on real structures, then fine-tune (probe, full, from
scratch) on real labelled chains, then embed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from protsteps.cli import main

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "encoder.pt", weights_only=True)["state_dict"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_single_label_run(run: Path, epochs: int) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    classes = metrics["classes"]
    assert metrics["task"] == "single" and metrics["seed"] == 0
    assert classes == ["1000000", "1000001", "1000002", "1000003", "1000004"]
    assert 1 <= metrics["best_epoch"] <= epochs and len(metrics["history"]) == epochs
    for part in ("valid", "test"):
        scores = metrics[part]
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["macro_f1"] <= 1.0
        assert sum(scores["support"].values()) == scores["proteins"] == metrics["counts"][part]
        matrix = np.asarray(scores["confusion_matrix"]["matrix"])
        assert scores["confusion_matrix"]["classes"] == classes and matrix.shape == (5, 5)
        assert matrix.sum() == scores["proteins"]
        assert matrix.sum(1).tolist() == [scores["support"][c] for c in classes]
        assert np.trace(matrix) / matrix.sum() == pytest.approx(scores["accuracy"])
    assert metrics["config"]["finetune"]["epochs"] == epochs
    assert metrics["counts"]["proteins"] == 60 and metrics["counts"]["skipped"] == 0
    for name in ("learning_curve.png", "confusion_matrix.png"):
        data = (run / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000, name
    for name in ("finetune.toml", "history.jsonl", "predictions.tsv", "splits.tsv", "skipped.tsv", "head.pt"):
        assert (run / name).is_file(), name
    head = torch.load(run / "head.pt", weights_only=True)
    assert head["classes"] == classes and head["head"]["in_dim"] == 32
    # the csv callback (the default [finetune] callbacks) logged every epoch
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert all(r["train_loss"] and r["valid_loss"] for r in rows)
    return metrics


def test_pretrain_then_probe_full_and_scratch_then_embed(
    pretrain_run, labels_dir, graph_cache, tmp_path, capsys
):
    scop2 = labels_dir / "scop2_chains.tsv"
    common = [
        "--label-column",
        "scop2_class",
        "--group-column",
        "pdb_chain",
        "--split",
        "0.6,0.2,0.2",
        "--cache-dir",
        str(graph_cache),
        "--batch-size",
        "8",
        "-q",
    ]
    runs = {
        "probe": ["--from", str(pretrain_run), "--mode", "probe", "--epochs", "4"],
        "full": ["--from", str(pretrain_run), "--mode", "full", "--epochs", "2"],
        "scratch": ["--from", "none", "--config", str(pretrain_run), "--mode", "full", "--epochs", "2"],
    }
    metrics = {}
    for name, args in runs.items():
        assert main(["finetune", str(scop2), "--out", str(tmp_path / name), *args, *common]) == 0, name
        assert f"run folder: {tmp_path / name}" in capsys.readouterr().out
        metrics[name] = check_single_label_run(tmp_path / name, int(args[args.index("--epochs") + 1]))

    # one split for the three: their numbers are paired
    splits = {n: (tmp_path / n / "splits.tsv").read_text() for n in runs}
    assert splits["probe"] == splits["full"] == splits["scratch"]
    # 0.2 of 58 groups (two chains appear twice under pdb_chain) is 12 groups of 1 or 2 rows
    assert 12 <= metrics["probe"]["counts"]["valid"] <= 14 and 12 <= metrics["probe"]["counts"]["test"] <= 14
    # the baseline has the pretrained architecture, featurizer and teacher, not its weights
    pretrained = weights(pretrain_run)
    scratch_settings = tomllib.loads((tmp_path / "scratch" / "finetune.toml").read_text())
    assert scratch_settings["backbone"]["from"] == "none (from scratch)"
    assert scratch_settings["backbone"]["encoder"]["config"]["hidden_dim"] == 32
    assert scratch_settings["backbone"]["teacher"] == {"name": "none"}
    assert same(weights(tmp_path / "probe"), pretrained)
    assert not same(weights(tmp_path / "full"), pretrained)
    assert weights(tmp_path / "scratch").keys() == pretrained.keys()
    assert not same(weights(tmp_path / "scratch"), pretrained)

    # a run folder is never overwritten
    assert main(["finetune", str(scop2), "--out", str(tmp_path / "probe"), *runs["probe"], *common]) == 2
    assert "already holds a finetune run" in capsys.readouterr().err

    # embeddings from the fine-tuned encoder, a failed input reported and the rest embedded
    with open(tmp_path / "probe" / "splits.tsv") as fh:
        test_rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["split"] == "test"][:2]
    inputs = [f"{r['path']}:{r['chain']}" for r in test_rows] + [str(tmp_path / "missing.pdb")]
    out = tmp_path / "embeddings.npz"
    args = ["embed", *inputs, "--from", str(tmp_path / "full"), "--out", str(out), "--per-residue"]
    assert main([*args, "--cache-dir", str(graph_cache)]) == 0
    assert "2 chains embedded (d = 32" in capsys.readouterr().out
    with np.load(out) as npz:
        assert npz["embeddings"].shape == (2, 32) and npz["embeddings"].dtype == np.float32
        assert npz["source"].tolist() == [r["path"] for r in test_rows]
        assert npz["chain"].tolist() == [r["chain"] for r in test_rows]
        assert npz["offsets"].tolist() == [0, int(npz["residues"][0]), int(npz["residues"].sum())]
        assert npz["residue_embeddings"].shape == (int(npz["residues"].sum()), 32)
        assert npz["failed_source"].tolist() == [str(tmp_path / "missing.pdb")]
        assert json.loads(str(npz["meta"]))["encoder"] == str(tmp_path / "full")


def test_protfunct_format_through_the_cli(
    pretrain_run, shared_data, structures_dir, graph_cache, tmp_path, capsys
):
    root = shared_data / "labels" / "ieconv" / "ProtFunct"
    run = tmp_path / "ec"
    args = ["finetune", str(root), "--format", "protfunct", "--structures", str(structures_dir)]
    args += ["--label-column", "ec_class", "--from", str(pretrain_run), "--out", str(run), "--mode", "probe"]
    assert main([*args, "--epochs", "2", "--cache-dir", str(graph_cache)]) == 0
    out = capsys.readouterr().out
    assert (
        "37388 of 37428 labelled rows cannot be used (first: chain_functions.txt:1: no structure file" in out
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["1", "2", "3", "5"]
    assert metrics["counts"]["proteins"] == 40 and metrics["counts"]["skipped"] == 37388
    assert (metrics["counts"]["valid"], metrics["counts"]["test"]) == (2, 7)  # ProtFunct's own splits
    assert len((run / "skipped.tsv").read_text().splitlines()) == 37388 + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from", "RUN", "--teacher", "none"],
            "--config and --teacher describe a from-scratch encoder",
        ),
        (["--from", "none", "--format", "protfunct"], "--format protfunct needs --structures DIR"),
        (["--from", "none", "--id-column", "acc"], "--format manifest does not take --id-column"),
        (["--from", "none", "--split", "0.8,0.2"], "split_fractions must be three shares summing to 1"),
        (["--from", "none", "--split", "a,b,c"], "--split 'a,b,c': expected three numbers"),
        (
            ["--from", "none", "--label-column", "scop_class"],
            "no column 'scop_class' (did you mean 'scop2_class'?)",
        ),
        (["--from", "RUN/nope"], "does not exist"),
    ],
)
def test_finetune_cli_errors_are_one_line(pretrain_run, labels_dir, tmp_path, capsys, args, message):
    args = [a.replace("RUN", str(pretrain_run)) for a in args]
    label = [] if "--label-column" in args else ["--label-column", "scop2_class"]
    code = main(
        ["finetune", str(labels_dir / "scop2_chains.tsv"), "--out", str(tmp_path / "x"), *label, *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error:")
    assert len(err.strip().splitlines()) <= 2  # one line (rich may wrap a very long one)


def test_deeploc_format_through_the_cli(pretrain_run, small_structures, graph_cache, tmp_path, capsys):
    import shutil

    folder = tmp_path / "afdb"
    folder.mkdir()
    rows = ["ACC,location"]
    for i, path in enumerate(small_structures):
        shutil.copyfile(path, folder / f"AF-P0000{i}-F1-model_v4.pdb.gz")
        rows.append(f"P0000{i},{'Nucleus' if i % 2 else 'Cytoplasm'}")
    rows.append("Q99999,Nucleus")  # no structure for this one
    labels = tmp_path / "deeploc.csv"
    labels.write_text("\n".join(rows) + "\n")
    run = tmp_path / "loc"
    args = [
        "finetune",
        str(labels),
        "--format",
        "deeploc",
        "--structures",
        str(folder),
        "--from",
        str(pretrain_run),
    ]
    assert (
        main([*args, "--out", str(run), "--mode", "probe", "--epochs", "2", "--cache-dir", str(graph_cache)])
        == 0
    )
    assert "1 of 7 labelled rows cannot be used (first: deeploc.csv:8: no AlphaFold file AF-Q99999" in (
        capsys.readouterr().out
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["Cytoplasm", "Nucleus"] and metrics["counts"]["proteins"] == 6
    assert (metrics["counts"]["train"], metrics["counts"]["valid"], metrics["counts"]["test"]) == (4, 1, 1)
    settings = tomllib.loads((run / "finetune.toml").read_text())
    assert settings["data"]["format"] == "deeploc" and settings["data"]["id_column"] == "ACC"
    assert main([*args, "--out", str(tmp_path / "x"), "--group-column", "g"]) == 2
    assert "--format deeploc does not take --group-column" in capsys.readouterr().err
