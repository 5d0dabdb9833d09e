"""Long work can be watched from a log file, and what protsteps writes others can read:
progress lines outside a terminal (featurize, pretrain, finetune), pretrain's
learning_curve.png, the thread count recorded, and file modes that follow the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from protsteps.cli import main
from protsteps.files import atomic_write_text
from protsteps.progress import ProgressDisplay, Ticker

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_pretrain(structures, run: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        *map(str, structures),
        "--out",
        str(run),
        "--cache-dir",
        str(cache),
        "--teacher",
        "none",
        "--batch-size",
        "2",
        "--set",
        "encoder.hidden_dim=16",
        "--set",
        "tasks.distance.num_pairs=32",
        "--set",
        "train.valid_fraction=0.2",
        *extra,
    ]


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------- progress lines


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_are_the_first_one_every_interval_and_the_last(capsys):
    display = ProgressDisplay("test")
    clock = FakeClock()
    display._ticker = Ticker(30.0, clock=clock)
    display.start(100)
    for step in range(1, 101):
        clock.now = step * 2.0  # two seconds a step
        display.update(step, "", f"step {step} ETA {display.eta(step)}")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "step 1 ETA 3m18s"
    assert [int(line.split()[1]) for line in printed] == [1, 16, 31, 46, 61, 76, 91, 100]
    assert printed[-1] == "step 100 ETA 0s"


def test_a_held_back_line_is_printed_when_the_work_stops(capsys):
    display = ProgressDisplay("test")
    clock = FakeClock()
    display._ticker = Ticker(30.0, clock=clock)
    display.start(100)
    for step in (1, 2, 3):  # stopped at step 3 of 100 (an interrupt)
        display.update(step, "", f"step {step}")
    display.close()
    assert capsys.readouterr().out.splitlines() == ["step 1", "step 3"]


def test_pretrain_into_a_log_file_shows_progress_and_draws_its_learning_curve(small_structures, tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    env = {k: v for k, v in os.environ.items() if k != "PROTSTEPS_PROGRESS_SECONDS"}
    with open(log, "w") as fh:  # like `protsteps pretrain ... > log.txt 2>&1`
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "protsteps",
                *tiny_pretrain(small_structures, run, tmp_path / "cache", "--epochs", "2", "--threads", "1"),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=300,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert any(line.startswith("step 1/6 (17%) epoch 0  loss ") and " ETA " in line for line in lines), text
    last = next(line for line in lines if line.startswith("step 6/6 (100%) epoch 1"))
    assert "distance/loss" in last and "valid loss " in last and "valid loss n/a" not in last
    assert "| threads 1 (as asked)" in text
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["threads"] for r in records if r["split"] == "train"} == {1}
    assert_png(run / "learning_curve.png")

    # a resumed run draws it again (here: it was deleted), with the new steps
    (run / "learning_curve.png").unlink()
    assert main(["pretrain", "--resume", str(run), "--epochs", "3", "-q", "--threads", "2"]) == 0
    assert_png(run / "learning_curve.png")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in records if r["split"] == "train"][-1] == 2


def test_featurize_into_a_log_file_reports_files_done_and_rate(small_structures, tmp_path, capsys):
    assert (
        main(
            [
                "featurize",
                *map(str, small_structures),
                "--out",
                str(tmp_path / "f"),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("featurize: 1/6 files (17%), 1 ok, 0 failed, ") and "files/s, ETA" in err[0]
    assert err[-1].startswith("featurize: 6/6 files (100%), 6 ok, 0 failed, ")


def test_finetune_shows_epochs_and_losses_and_records_its_threads(small_structures, tmp_path, capsys):
    from protsteps.downstream import FinetuneConfig, finetune, read_manifest
    from protsteps.registry import default_catalog
    from protsteps.runconfig import load_run_config

    rows = ["path\tlabel\tsplit"]
    for path, label, split in zip(
        small_structures, "ababab", ["train", "train", "train", "train", "valid", "test"], strict=True
    ):
        rows.append(f"{path}\t{label}\t{split}")
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    scratch = load_run_config(
        None, default_catalog(), components={"teacher": "none"}, sets=["encoder.hidden_dim=16"]
    )
    config = FinetuneConfig(epochs=3, batch_size=3, cache_dir=str(tmp_path / "c"), mode="probe", threads=1)
    result = finetune(read_manifest(tmp_path / "m.tsv"), None, tmp_path / "run", config, scratch=scratch)
    out = capsys.readouterr().out
    assert "| threads 1 (as asked)" in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert epoch_lines[0].startswith("epoch 1: train loss ") and "(1/3 epochs, ETA " in epoch_lines[0]
    assert epoch_lines[-1].startswith("epoch 3: train loss ") and "valid loss" in epoch_lines[-1]
    assert result.metrics["threads"] == {"count": 1, "chosen": "as asked"}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["threads"]["count"] == 1


# ---------------------------------------------------------------------------- permissions


def test_atomic_writes_follow_the_umask(tmp_path):
    for mask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)):
        path = tmp_path / f"file-{mask:o}.txt"
        with umask(mask):
            atomic_write_text(path, "x")
            atomic_write_text(path, "y")  # replacing a file: the new one's mode
        assert mode(path) == expected, oct(mask)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_run_and_its_cache_are_readable_by_others_under_umask_022(small_structures, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    with umask(0o022):
        assert main(tiny_pretrain(small_structures[:3], run, cache, "--epochs", "1", "-q")) == 0
        import torch

        from protsteps.teachers import TrunkCache, TrunkKey

        trunk = tmp_path / "trunk"
        TrunkCache(1 << 20, trunk).put(TrunkKey("esm2", "ab" * 32, 5, "MKV"), torch.zeros(3, 4))
    for name in (
        "config.toml",
        "metrics.jsonl",
        "featurize-report.json",
        "encoder.pt",
        "learning_curve.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert mode(run / name) == 0o644, name
    entries = [*cache.rglob("*.pgs"), cache / "index.sqlite"]
    trunk_entries = [p for p in trunk.rglob("*.pt")]
    assert entries and trunk_entries
    for path in entries + trunk_entries:
        assert mode(path) == 0o644, path
    for folder in [run, run / "checkpoints", cache, *(p.parent for p in entries + trunk_entries)]:
        assert mode(folder) == 0o755, folder


def test_a_store_shared_by_a_group_stays_group_writable_under_umask_002(tmp_path, structures_dir):
    from protsteps.featurize import featurize_many

    cache = tmp_path / "cache"
    with umask(0o002):
        featurize_many([structures_dir / "biopython" / "1A8O.cif"], cache_dir=cache)
    assert mode(cache / "index.sqlite") == 0o664
    assert all(mode(p) == 0o664 for p in cache.rglob("*.pgs"))
    assert mode(cache / "shards") == 0o775


def test_atomic_write_path_hands_a_writer_a_temporary_path_and_renames_it(tmp_path):
    from protsteps.files import atomic_write_path

    target = tmp_path / "out" / "x.bin"
    seen = []

    def write(temporary):
        seen.append(temporary)
        assert temporary.parent == target.parent and temporary.exists() and temporary.stat().st_size == 0
        temporary.write_bytes(b"new")

    with umask(0o022):
        atomic_write_path(target, write)
    assert target.read_bytes() == b"new" and mode(target) == 0o644 and not seen[0].exists()

    def broken(temporary):
        temporary.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write_path(target, broken)
    assert target.read_bytes() == b"new"  # the earlier file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]  # no temporary file left
