"""One writer per run folder: the lock, stale temporary files, strict JSON metrics."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from protsteps.cli import main
from protsteps.errors import ProtstepsError
from protsteps.files import (
    LOCK_NAME,
    FolderInUseError,
    atomic_write_text,
    remove_stale_temporaries,
    run_folder_lock,
    strict_json_line,
    writable_folder,
)
from protsteps.training import MetricsLog
from tests import cli_args


def strict(line: str) -> dict:
    """``json.loads`` that refuses NaN and Infinity (which Python's json accepts)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_written_as_null_with_a_flag(tmp_path):
    line = strict_json_line({"step": 3, "loss": math.nan, "lr": 0.1, "task": {"acc": math.inf}})
    assert strict(line) == {
        "step": 3,
        "loss": None,
        "lr": 0.1,
        "task": {"acc": None},
        "nonfinite": ["loss", "task.acc"],
    }
    assert strict(strict_json_line({"loss": 1.5})) == {"loss": 1.5}  # no flag when all finite
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    log.write({"step": 1, "split": "valid", "loss": -math.inf})
    (record,) = [strict(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["loss"] is None and record["nonfinite"] == ["loss"]


def temporaries(folder: Path) -> list[Path]:
    """What a killed atomic write leaves (its real naming), and a user's look-alikes."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    stale = [folder / ".metrics.jsonl.0123456789ab.tmp", folder / "checkpoints" / ".last.pt.a1b2c3d4e5f6.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    for name in ("notes.tmp", ".notes.tmp", ".last.pt.xyz.tmp"):
        (folder / name).write_text("mine")
    return stale


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    stale = temporaries(tmp_path)
    atomic_write_text(tmp_path / "kept.txt", "x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".last.pt.xyz.tmp",
        ".notes.tmp",
        "checkpoints",
        "kept.txt",
        "notes.tmp",
    ]


def test_a_second_holder_is_refused_with_the_pid_and_the_folder(tmp_path):
    folder = tmp_path / "run"
    with run_folder_lock(folder, "pretrain") as lock:
        assert lock == folder / LOCK_NAME
        assert lock.read_text().split() == [str(os.getpid()), "pretrain"]
        with pytest.raises(
            FolderInUseError,
            match=rf"{folder} is in use by another protsteps process \(pid \d+ \(pretrain\)\)",
        ):
            with run_folder_lock(folder, "finetune"):
                pass
    with run_folder_lock(folder, "finetune"):  # released at the end of the block
        pass


def test_finetune_refuses_a_locked_folder_before_reading_anything(tmp_path):
    from protsteps.downstream import finetune
    from protsteps.downstream._labels import LabelledSet

    out = tmp_path / "ft"
    nothing = LabelledSet(source="labels.tsv", label_column="label", rows=[])
    with run_folder_lock(out, "finetune"):
        with pytest.raises(FolderInUseError, match="in use by another protsteps process"):
            finetune(nothing, None, out)  # type: ignore[arg-type]  # no encoder: never read


HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(os.path.join(sys.argv[1], ".protsteps.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} pretrain --resume".encode())
    print("held", flush=True)
    time.sleep(120)
    """
)


pretrain_args = functools.partial(cli_args.pretrain_args, num_pairs=16)


@pytest.mark.slow
def test_a_pretrain_on_a_locked_folder_is_refused_and_a_later_one_clears_stale_files(
    small_structures, tmp_path, capsys
):
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(pretrain_args(small_structures[:3], run, cache)) == 0
    assert (run / LOCK_NAME).is_file()
    stale = temporaries(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run.rglob("*"))
        assert main(["pretrain", "--resume", str(run), "--epochs", "2", "-q"]) == 1
        err = capsys.readouterr().err
        assert f"{run} is in use by another protsteps process (pid {holder.pid} (pretrain --resume))" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert sorted(p.name for p in run.rglob("*")) == before  # nothing touched
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # the holder is gone (killed: its lock went with it); the resume runs and clears the
    # temporary files of writes that were cut short, and only those
    assert main(["pretrain", "--resume", str(run), "--epochs", "2", "-q"]) == 0
    assert not any(path.exists() for path in stale)
    assert (run / "notes.tmp").exists() and (run / ".notes.tmp").exists()


@pytest.mark.slow
def test_a_fresh_run_into_a_locked_folder_takes_nothing_back(small_structures, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (run / "config.toml").write_text("# the holder's\n")
        assert main(pretrain_args(small_structures[:3], run, tmp_path / "cache")) == 1
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert (run / "config.toml").read_text() == "# the holder's\n"
    finally:
        holder.kill()
        holder.wait(timeout=30)


@pytest.mark.slow
def test_metrics_jsonl_is_strict_json_when_a_loss_is_not_finite(small_structures, tmp_path, capsys):
    run = tmp_path / "run"
    extra = ["--set", "tasks.distance.weight=nan", "--set", "train.nonfinite=skip"]
    extra += ["--set", "train.valid_fraction=0.3", "--set", "train.log_every=1"]
    assert main(pretrain_args(small_structures, run, tmp_path / "cache", *extra)) == 0
    records = [strict(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (valid,) = [r for r in records if r["split"] == "valid"]
    assert valid["loss"] is None and "loss" in valid["nonfinite"]


def test_finetune_refuses_an_unknown_callback_before_making_its_folder(tmp_path):
    from protsteps.downstream import FinetuneConfig, finetune
    from protsteps.downstream._labels import LabelledSet
    from protsteps.errors import ProtstepsError

    out = tmp_path / "ft"
    nothing = LabelledSet(source="labels.tsv", label_column="label", rows=[])
    with pytest.raises(ProtstepsError, match="csv"):
        finetune(nothing, None, out, FinetuneConfig(callbacks=["csvv"]))  # type: ignore[arg-type]
    assert not out.exists()


def test_writable_folder_makes_the_folder_or_says_in_one_line_why_not(tmp_path, monkeypatch):
    made = writable_folder(tmp_path / "a" / "b", "--out a/b", "give another path")
    assert made.is_dir()
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    with pytest.raises(ProtstepsError, match=r"^--out x is a file, not a folder; give another path$"):
        writable_folder(blocker, "--out x", "give another path")
    with pytest.raises(ProtstepsError, match=r"^--out x: a part of its path is a file, not a folder; hint$"):
        writable_folder(blocker / "below", "--out x", "hint")
    assert blocker.read_text() == "mine\n"
    # (this suite may run as root, for whom every folder is writable: the check is asked for)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != made)
    with pytest.raises(ProtstepsError, match=r"^cache folder c is not writable; pass --cache-dir$"):
        writable_folder(made, "cache folder c", "pass --cache-dir")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ProtstepsError, match=r"^y cannot be created \(Permission denied\); hint$"):
        writable_folder(tmp_path / "new", "y", "hint")
