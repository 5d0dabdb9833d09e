"""protsteps pretrain: run folders, exact resume, crash safety, non-finite losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tomllib
import torch

import protsteps
from protsteps.cli import main
from protsteps.export import load_encoder
from protsteps.registry import default_catalog
from protsteps.runconfig import RunConfig, load_run_config
from protsteps.training import load_checkpoint, pretrain

pytestmark = pytest.mark.slow


def cli_args(structures, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        *map(str, structures),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--batch-size",
        "2",
        "--set",
        "encoder.hidden_dim=32",
        "--set",
        "tasks.distance.num_pairs=64",
        "--set",
        "train.valid_fraction=0.2",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.log_every=1",
        "-q",
        *extra,
    ]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_folder_holds_config_metrics_checkpoints_and_encoder(small_structures, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(cli_args(small_structures, run, tmp_path / "cache", "--teacher", "none", "--epochs", "2")) == 0
    )
    assert "done: 6 steps, 2 epochs" in capsys.readouterr().out
    for name in (
        "config.toml",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "encoder.pt",
        "featurize-report.json",
    ):
        assert (run / name).is_file(), name

    config = RunConfig.from_dict(tomllib.loads((run / "config.toml").read_text()), default_catalog())
    assert (config.teacher.name, config.scheme.name) == ("none", "joint")  # auto resolved and recorded
    assert config.encoder.config.hidden_dim == 32

    records = read_metrics(run)
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for key in (
        "epoch",
        "loss",
        "lr",
        "residues_per_second",
        "distance/loss",
        "distance/accuracy",
        "dihedral/loss",
    ):
        assert key in train[0], key
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6] and all("loss" in r for r in valid)

    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 6 and last["epoch"] == 2

    encoder, record = load_encoder(run)
    assert record["encoder"]["name"] == "gin" and record["teacher"] == {"name": "none"}
    batch = protsteps.collate(protsteps.featurize(small_structures[0]))
    with torch.no_grad():
        embedding = encoder.eval()(batch).graph
    assert embedding.shape == (1, 32) and torch.isfinite(embedding).all()
    # a second run into the same folder is refused: nothing is overwritten
    assert main(cli_args(small_structures, run, tmp_path / "cache", "--teacher", "none")) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


@pytest.mark.parametrize(
    ("teacher_name", "budget"),
    [("none", 0), ("esm", 0), ("none", 250)],
    ids=["no-teacher", "esm-teacher", "residue-budget"],
)
def test_an_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(
    small_structures, tiny_esm_weights, tmp_path, teacher_name, budget
):
    # with a residue budget, epochs hold different numbers of batches
    epochs = "3" if budget else "2"
    teacher = ["--teacher", teacher_name, "--epochs", epochs, "--set", "train.deterministic=true"]
    if budget:
        teacher += ["--max-residues", str(budget)]
    if teacher_name == "esm":
        teacher += ["--set", f'teacher.weights="{tiny_esm_weights}"']
    whole = tmp_path / "whole"
    assert main(cli_args(small_structures, whole, tmp_path / "cache", *teacher)) == 0

    parts = tmp_path / "parts"
    catalog = default_catalog()
    args = cli_args(small_structures, parts, tmp_path / "cache", *teacher)
    # the same config as the CLI builds, stopped after 4 of 6 steps (mid-epoch)
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    config = load_run_config(
        None,
        catalog,
        components={"teacher": teacher_name},
        train={"epochs": int(epochs), "batch_size": 2, "max_residues": budget},
        data={"inputs": [str(p) for p in small_structures], "cache_dir": str(tmp_path / "cache")},
        sets=sets,
    )
    pretrain(config, parts, catalog, show_progress=False, max_steps=4)
    assert load_checkpoint(parts / "checkpoints" / "last.pt")["step"] == 4
    assert main(["pretrain", "--resume", str(parts), "-q"]) == 0
    whole_state = load_checkpoint(whole / "checkpoints" / "last.pt")
    assert whole_state["epoch"] == int(epochs)
    assert load_checkpoint(parts / "checkpoints" / "last.pt")["step"] == whole_state["step"]

    a, b = final_state(whole), final_state(parts)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    scheme_a = load_checkpoint(whole / "checkpoints" / "last.pt")["scheme"]
    scheme_b = load_checkpoint(parts / "checkpoints" / "last.pt")["scheme"]
    for key in scheme_a.get("critic", {}):  # the pseudo bi-level critic, trained on its own
        assert torch.equal(scheme_a["critic"][key], scheme_b["critic"][key]), key
    strip = lambda rs: [{k: v for k, v in r.items() if k != "residues_per_second"} for r in rs]  # noqa: E731
    assert strip(read_metrics(whole)) == strip(read_metrics(parts))


def test_resume_refuses_changes_to_the_run(small_structures, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--resume", str(run)]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run), "--encoder", "equivariant"]) == 2
    assert "remove --encoder" in capsys.readouterr().err


KILLER = textwrap.dedent(
    """
    import os, sys, time
    import protsteps.files as files
    real_replace = os.replace
    def slow_replace(src, dst):
        if str(dst).endswith("last.pt"):
            open(sys.argv[2], "w").close()   # tell the test the new checkpoint is being written
            time.sleep(600)
        real_replace(src, dst)
    files.os.replace = slow_replace
    from protsteps.cli import main
    sys.exit(main(["pretrain", "--resume", sys.argv[1], "--epochs", "3", "-q"]))
    """
)


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(small_structures, tmp_path):
    run = tmp_path / "run"
    assert (
        main(cli_args(small_structures, run, tmp_path / "cache", "--teacher", "none", "--epochs", "1")) == 0
    )
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    marker = tmp_path / "writing"
    process = subprocess.Popen([sys.executable, "-c", KILLER, str(run), str(marker)])
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert process.poll() is None, "the training process ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint write within 120 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["step"] == before["step"]
    for key in before["model"]:
        assert torch.equal(before["model"][key], after["model"][key])
    # the half-finished write is a stray temporary file, never the checkpoint itself
    assert any(p.name.endswith(".tmp") for p in (run / "checkpoints").iterdir())
    # and the run resumes from the intact checkpoint
    assert main(["pretrain", "--resume", str(run), "--epochs", "2", "-q"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2 * before["step"]


def test_ctrl_c_saves_says_how_to_resume_and_exits_130(small_structures, tmp_path):
    run = tmp_path / "run"
    args = cli_args(small_structures, run, tmp_path / "cache", "--teacher", "none", "--epochs", "1000")
    process = subprocess.Popen(
        [sys.executable, "-m", "protsteps", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.time() < deadline, "no training step within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # quiet (-q) or not, an interruption is said, not reported as "done", and the status is 130
    assert process.returncode == 130, err[-2000:]
    assert "done:" not in out
    assert f"continue with: protsteps pretrain --resume {run}" in err
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")
    assert f"interrupted at step {stopped['step']} " in err
    assert 0 < stopped["step"] < 3000
    # the run continues from there
    assert main(["pretrain", "--resume", str(run), "--epochs", str(stopped["epoch"] + 1), "-q"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == stopped["epoch"] + 1


def test_inputs_that_cannot_be_used_are_a_warning_even_when_quiet(small_structures, tmp_path, capsys):
    missing = tmp_path / "nowhere.pdb"
    args = cli_args(
        [*small_structures[:3], missing], tmp_path / "run", tmp_path / "cache", "--teacher", "none"
    )
    assert main([*args, "--epochs", "1"]) == 0  # cli_args passes -q
    err = capsys.readouterr().err
    assert f"warning: 1 input could not be used (first: {missing}: no such file or folder)" in err


def test_resume_refuses_fewer_epochs_than_done_and_bad_training_values(small_structures, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(cli_args(small_structures, run, tmp_path / "cache", "--teacher", "none", "--epochs", "2")) == 0
    )
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run), "--epochs", "1"]) == 2
    assert "has already completed 2 epochs" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run), "--epochs", "0"]) == 2
    assert "[train] epochs = 0 is out of range: it must be >= 1 and <= 100000" in capsys.readouterr().err
    assert "epochs = 2" in (run / "config.toml").read_text()
    for setting, message in [
        ("train.lr=-1", "lr = -1.0 is out of range: it must be > 0 and <= 100"),
        ("train.valid_fraction=1.0", "valid_fraction = 1.0 is out of range: it must be >= 0 and < 1"),
        ("train.epochs=0", "epochs = 0 is out of range: it must be >= 1"),
        ("train.weight_decay=-0.1", "weight_decay = -0.1 is out of range: it must be >= 0"),
    ]:
        out = tmp_path / setting
        assert main(cli_args(small_structures, out, tmp_path / "cache", "--set", setting)) == 2
        assert f"[train] {message}" in capsys.readouterr().err
        assert not out.exists()


def test_a_non_finite_loss_stops_naming_the_structures_or_is_skipped(small_structures, tmp_path, capsys):
    args = cli_args(
        small_structures,
        tmp_path / "stop",
        tmp_path / "cache",
        "--teacher",
        "none",
        "--set",
        "tasks.distance.weight=nan",
    )
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "stopped at step 0: non-finite loss nan on batch of" in err
    assert "masif/" in err and ".pdb.gz:" in err
    args = cli_args(
        small_structures,
        tmp_path / "skip",
        tmp_path / "cache",
        "--teacher",
        "none",
        "--epochs",
        "1",
        "--set",
        "tasks.distance.weight=nan",
        "--set",
        "train.nonfinite=skip",
    )
    assert main(args) == 0
    assert "3 batches skipped" in capsys.readouterr().out
    assert read_metrics(tmp_path / "skip")[-2]["skipped_batches"] == 3
