"""The example plugin's head, label format, metric, writer, callback and command, installed
as a real package and run through pretrain / finetune / embed and its own command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from .test_example_plugin import _run, plugin_env  # noqa: F401  (the installed example plugin)

pytestmark = pytest.mark.integration


def test_each_extension_is_listed_with_the_plugin(plugin_env):  # noqa: F811
    records = json.loads(_run(plugin_env, "-m", "protsteps", "plugins", "--json").stdout)
    ours = {(r["kind"], r["name"]) for r in records if r["plugin"] == "example"}
    assert ours >= {
        ("head", "cosine"),
        ("label_format", "class_folders"),
        ("metric", "balanced_accuracy"),
        ("embeddings_writer", "tsv"),
        ("callback", "loss_summary"),
        ("command", "sequences"),
    }
    builtin = {(r["kind"], r["name"]): r["plugin"] for r in records}
    assert builtin[("head", "mlp")] == "downstream" and builtin[("callback", "csv")] == "loggers"


def _class_folders(root: Path, structures: list[Path]) -> Path:
    """train/valid/test folders of two classes, copies of real structures."""
    layout = {"train": [0, 1, 2, 3, 4, 5], "valid": [6, 7], "test": [8, 9]}
    for split, indices in layout.items():
        for i in indices:
            folder = root / split / ("alpha" if i % 2 else "beta")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(structures[i], folder / structures[i].name)
    return root


def test_pretrain_finetune_embed_and_the_command_with_the_plugins_extensions(
    plugin_env,  # noqa: F811
    tmp_path,
    structures_dir,
):
    # single-chain files (PDBID_C.pdb.gz): one protein per file, as class_folders reads them
    structures = sorted(p for p in (structures_dir / "masif").glob("*.pdb.gz") if len(p.name) == 13)[:10]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    run = tmp_path / "pre"
    pretrain = ["-m", "protsteps", "pretrain", *map(str, structures[:6]), "--out", str(run), *cache, "-q"]
    pretrain += ["--teacher", "none", "--encoder", "sequence_cnn", "--epochs", "2", "--batch-size", "3"]
    pretrain += ["--set", "encoder.hidden_dim=16", "--set", 'train.callbacks=["csv", "loss_summary"]']
    _run(plugin_env, *pretrain)
    summary = json.loads((run / "loss_summary.json").read_text())
    jsonl = (run / "metrics.jsonl").read_text().splitlines()
    assert summary["status"] == "completed" and summary["records"] == len(jsonl)
    assert summary["total_steps"] == 4 and summary["last_train_loss"] > 0
    assert len((run / "metrics.csv").read_text().splitlines()) == len(jsonl) + 1  # the header

    folders = _class_folders(tmp_path / "classes", structures)
    finetune = ["-m", "protsteps", "finetune", str(folders), "--format", "class_folders", "--from", str(run)]
    finetune += ["--out", str(tmp_path / "ft"), "--head", "cosine", "--metric", "balanced_accuracy", *cache]
    _run(plugin_env, *finetune, "--epochs", "2", "--mode", "probe", "-q")
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["selection"]["metric"] == "valid balanced_accuracy"
    assert metrics["counts"] == {
        "labelled_rows": 10,
        "skipped": 0,
        "proteins": 10,
        "train": 6,
        "valid": 2,
        "test": 2,
        "classes": 2,
    }
    assert 0.0 <= metrics["test"]["balanced_accuracy"] <= 1.0 and "macro_f1" in metrics["test"]
    head = torch.load(tmp_path / "ft" / "head.pt", weights_only=True)
    assert head["head_name"] == "cosine" and set(head["state_dict"]) == {"prototypes", "log_scale"}

    # a label option the format does not take: one line, before any work
    bad = ["-m", "protsteps", "finetune", str(folders), "--format", "class_folders", "--from", str(run)]
    refused = _run(plugin_env, *bad, "--label-column", "x", "--out", str(tmp_path / "no"), check=False)
    assert refused.returncode != 0 and not (tmp_path / "no").exists()
    assert (
        refused.stderr.strip()
        == "error: --format class_folders does not take --label-column (it takes no options)"
    )

    out = tmp_path / "e.tsv"
    _run(
        plugin_env,
        "-m",
        "protsteps",
        "embed",
        *map(str, structures[:3]),
        "--from",
        str(run),
        "--out",
        str(out),
        *cache,
    )
    lines = out.read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["source", "chain", "residues", "e0"] and len(lines) == 4
    assert all(len(line.split("\t")) == 3 + 16 for line in lines)

    fasta = _run(plugin_env, "-m", "protsteps", "sequences", str(structures[0])).stdout.splitlines()
    assert fasta[0].startswith(f">{structures[0]}:") and set(fasta[1]) <= set("ACDEFGHIKLMNPQRSTVWYX")
