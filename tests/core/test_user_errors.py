"""One line for every user error (issue 12, deliverable 4): each case gives exactly one
``error: ...`` line naming the file or setting with a way out, exit status 2 for a user
error and 1 for a failure while running, and no traceback unless ``protsteps --debug``."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from protsteps.cli import main
from protsteps.config import check_range, fields_of, from_dict, option
from protsteps.errors import ConfigError
from protsteps.runconfig import TrainConfig, load_raw
from tests import cli_args


def one_error_line(capsys) -> str:
    """The single ``error:`` line on stderr (and nothing that looks like a traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


pretrain_args = cli_args.pretrain_args


@pytest.fixture(scope="module")
def trained_run(small_structures, tmp_path_factory) -> Path:
    """A finished one-epoch run on three real structures (copied by each test that changes it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    cache = tmp_path_factory.mktemp("cache")
    assert main(pretrain_args(small_structures[:3], run, cache)) == 0
    return run


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


# ---------------------------------------------------------------------------- run files


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[train]\nseed = -5\n", "[train] seed = -5 is out of range: it must be >= 0 and <= 4294967295"),
        (
            '[train]\ndevice = "tpu:7"\n',
            "[train] device = 'tpu:7' is not a device protsteps can use; give 'auto'",
        ),
        ("[train]\nworkers = 1e20\n", "[train] workers = 100000000000000000000 is out of range"),
        (
            "[train]\nepochs = 1e9\n",
            "[train] epochs = 1000000000 is out of range: it must be >= 1 and <= 100000",
        ),
        ("[train]\nbatch_size = 0\n", "[train] batch_size = 0 is out of range: it must be >= 1"),
        (
            "[train]\nlr = nan\n",
            "[train] lr = nan is not a number; give a number (it must be > 0 and <= 100)",
        ),
        ("[train]\nlr = inf\n", "[train] lr = inf is out of range: it must be > 0 and <= 100"),
        ("[data]\nmin_residues = -1\n", "[data] min_residues = -1 is out of range"),
        (
            '[encoder]\nname = "gin"\nhidden_dim = 1000000\n',
            "[encoder] (gin) hidden_dim = 1000000 is out of range: it must be >= 0 and <= 16384",
        ),
        (
            '[encoder]\nname = "gin"\nnum_layers = 100000\n',
            "[encoder] (gin) num_layers = 100000 is out of range: it must be >= 1 and <= 1000",
        ),
        (
            '[[tasks]]\nname = "distance"\nnum_bins = 100000000\n',
            "[[tasks]] #0 (distance) num_bins = 100000000 is out of range",
        ),
    ],
)
def test_run_file_values_out_of_range_are_one_line_and_exit_2(tmp_path, capsys, toml, message):
    config = tmp_path / "run.toml"
    config.write_text(toml)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--config", str(config), "--teacher", "none", "-q"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {message}"), line
    assert not out.exists()


def test_the_same_ranges_hold_for_set_overrides_and_cli_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--set", "train.seed=-5", "--teacher", "none"]) == 2
    assert "error: [train] seed = -5 is out of range" in one_error_line(capsys)
    assert main(["pretrain", "--out", str(out), "--epochs", "1000000000", "--teacher", "none"]) == 2
    assert "error: [train] epochs = 1000000000 is out of range" in one_error_line(capsys)
    assert main(["pretrain", "--out", str(out), "--device", "tpu:7", "--teacher", "none"]) == 2
    assert "[train] device = 'tpu:7' is not a device" in one_error_line(capsys)
    assert not out.exists()


def test_a_cuda_device_that_is_not_there_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    device = f"cuda:{torch.cuda.device_count() + 3}"
    assert main(["pretrain", "--out", str(out), "--device", device, "--teacher", "none", "-q"]) == 2
    line = one_error_line(capsys)
    assert f"[train] device = '{device}' but" in line
    assert (
        ("CUDA is not available" in line) if not torch.cuda.is_available() else ("this machine has" in line)
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(128, 256)) * 3, "is not a text file (byte 0 is not UTF-8); give a TOML run file"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests arrays or tables too deeply to read"),
        (("[" + ".".join(["a"] * 5000) + "]\n").encode(), "nests tables or arrays 5001 levels deep"),
        (b"[train\nseed = 1\n", "is not valid TOML"),
        (b"x" * 2_000_000, "is 2,000,000 bytes; a run file is a short TOML file"),
    ],
)
def test_run_files_that_are_not_small_toml_are_refused_naming_the_file(tmp_path, capsys, content, message):
    config = tmp_path / "run.toml"
    config.write_bytes(content)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: config file {config} ") and message in line, line
    assert not out.exists()


def test_a_folder_or_a_fifo_given_as_the_run_file_is_refused(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--config", str(tmp_path)]) == 2
    assert "is a folder; give the run file (TOML) itself" in one_error_line(capsys)
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--config", str(fifo)]) == 2  # never blocks
    assert "is not a regular file (a pipe or device)" in one_error_line(capsys)


def test_bounds_are_declared_once_and_shown_checked_and_listed():
    @dataclasses.dataclass
    class PluginConfig:
        width: int = option(64, "Layer width.", minimum=1, maximum=4096)
        rate: float = option(0.5, "A rate.", exclusive_minimum=0.0, exclusive_maximum=1.0)
        sizes: list[int] = option([8, 16], "Sizes.", minimum=1)
        free: int = option(0, "No declared bounds.")

    assert from_dict(PluginConfig, {"width": 4096, "rate": 0.25}, section="[encoder]").width == 4096
    for key, value, text in [
        ("width", 0, "[encoder] width = 0 is out of range: it must be >= 1 and <= 4096"),
        ("rate", 1.0, "[encoder] rate = 1.0 is out of range: it must be > 0.0 and < 1.0"),
        ("sizes", [8, 0], "[encoder] sizes[1] = 0 is out of range: it must be >= 1"),
        ("free", 2**63, "[encoder] free = 9223372036854775808 is out of range: an integer setting must fit"),
    ]:
        with pytest.raises(ConfigError) as caught:
            from_dict(PluginConfig, {key: value}, section="[encoder]")
        assert str(caught.value) == text or str(caught.value).startswith(text)
    width = {f.name: f for f in fields_of(PluginConfig)}["width"]
    assert width.range == ">= 1, <= 4096"
    assert width.as_json()["minimum"] == 1 and width.as_json()["maximum"] == 4096
    # a config built in Python is held to the same bounds
    with pytest.raises(ConfigError, match=r"\[train\] seed = -5 is out of range"):
        TrainConfig(seed=-5)
    check_range(True, {"minimum": 5}, "flag")  # booleans are not numbers here


def test_the_reference_shows_the_bounds():
    from protsteps.runconfig import DataConfig

    train = {f.name: f for f in fields_of(TrainConfig)}
    assert train["epochs"].range == ">= 1, <= 100000"
    assert train["lr"].range == "> 0, <= 100"
    assert {f.name: f for f in fields_of(DataConfig)}["min_residues"].range == ">= 0, <= 1000000"


# ---------------------------------------------------------------------------- outputs, disks, caches


def test_an_out_that_is_a_file_is_refused_before_any_work(small_structures, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    cache = tmp_path / "cache"
    assert main(pretrain_args(small_structures[:2], blocker, cache)) == 2
    assert f"error: {blocker} is a file, not a folder" in one_error_line(capsys)
    assert blocker.read_text() == "mine\n"
    assert not cache.exists()  # refused before featurizing


def test_finetune_and_embed_refuse_an_unusable_out(
    trained_run, small_structures, shared_data, tmp_path, capsys
):
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    labels = shared_data / "labels" / "scop2_class_chains.tsv"
    args = ["finetune", str(labels), "--from", str(trained_run), "--label-column", "scop2_class"]
    assert main([*args, "--out", str(blocker), "--epochs", "1"]) == 2
    assert f"{blocker} is a file, not a folder" in one_error_line(capsys)
    embed = [
        "embed",
        str(small_structures[0]),
        "--from",
        str(trained_run),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main([*embed, "--out", str(blocker / "e.npz")]) == 2
    assert (
        f"error: --out {blocker / 'e.npz'}: the folder {blocker} is a file, not a folder"
        in one_error_line(capsys)
    )
    folder = tmp_path / "e.npz"
    folder.mkdir()
    assert main([*embed, "--out", str(folder)]) == 2
    assert f"error: --out {folder}: is a folder; give a file name" in one_error_line(capsys)
    assert not (tmp_path / "c").exists()  # refused before any work
    assert blocker.read_text() == "mine\n"


def test_an_unusable_cache_folder_is_one_error_before_any_input(
    trained_run, small_structures, tmp_path, capsys
):
    blocker = tmp_path / "cachefile"
    blocker.write_text("")
    out = tmp_path / "run"
    assert main(pretrain_args(small_structures[:2], out, blocker)) == 2
    line = one_error_line(capsys)
    assert str(blocker) in line and "--cache-dir" in line
    assert not out.exists()
    embed = [
        "embed",
        *map(str, small_structures[:2]),
        "--from",
        str(trained_run),
        "--out",
        str(tmp_path / "e.npz"),
    ]
    assert main([*embed, "--cache-dir", str(blocker / "below")]) == 2
    line = one_error_line(capsys)
    assert str(blocker) in line and "unexpected error" not in line
    assert not (tmp_path / "e.npz").exists()


def _full_disk(monkeypatch) -> None:
    """Every fsync'ed write fails as on a full disk (ENOSPC, with no file name, as os.fsync
    reports it)."""

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)


def test_a_full_disk_is_one_line_naming_the_file_and_exit_1(small_structures, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    args = pretrain_args(small_structures[:2], out, cache)
    _full_disk(monkeypatch)
    assert main(args) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: {out / 'config.toml'}: No space left on device; free some space")
    assert not out.exists()  # a run that failed before its first checkpoint takes back what it wrote


def test_a_full_disk_while_embedding_is_one_line(
    trained_run, small_structures, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "e.npz"
    args = ["embed", str(small_structures[0]), "--from", str(trained_run), "--cache-dir", str(tmp_path / "c")]
    _full_disk(monkeypatch)
    # the cache fills the disk first
    assert main([*args, "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert f"error: {tmp_path / 'c'}" in line and "No space left on device" in line and "--cache-dir" in line
    # with the graphs cached, writing the embeddings does
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "first.npz")]) == 0
    capsys.readouterr()
    _full_disk(monkeypatch)
    assert main([*args, "--out", str(out)]) == 1
    assert f"error: {out}: No space left on device; free some space" in one_error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob(".e.npz*"))


def test_debug_prints_the_traceback_of_an_os_error(small_structures, tmp_path, monkeypatch, capsys):
    _full_disk(monkeypatch)
    assert main(["--debug", *pretrain_args(small_structures[:2], tmp_path / "run", tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "OSError" in err
    assert err.strip().splitlines()[-1].startswith("error: ")


# ---------------------------------------------------------------------------- resume


def test_resume_after_config_toml_was_edited_says_what_changed(run_copy, capsys):
    config = run_copy / "config.toml"
    text = config.read_text()
    assert "hidden_dim = 16" in text and "lr = 0.001" in text
    config.write_text(text.replace("hidden_dim = 16", "hidden_dim = 32").replace("lr = 0.001", "lr = 0.01"))
    before = (run_copy / "checkpoints" / "last.pt").read_bytes()
    assert main(["pretrain", "--resume", str(run_copy), "--epochs", "2", "-q"]) == 2
    line = one_error_line(capsys)
    assert f"error: cannot resume {run_copy}: {config} differs from the settings" in line
    assert "[encoder] hidden_dim 16 -> 32; [train] lr 0.001 -> 0.01" in line
    assert "undo the edit, or start a new run with the edited settings: protsteps pretrain --config" in line
    assert (run_copy / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_takes_an_edit_of_what_a_resume_may_change(run_copy, capsys):
    config = run_copy / "config.toml"
    config.write_text(config.read_text().replace("epochs = 1", "epochs = 2"))
    assert main(["pretrain", "--resume", str(run_copy), "-q"]) == 0
    assert "done: " in capsys.readouterr().out
    assert torch.load(run_copy / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_resume_after_config_toml_became_invalid_names_it(run_copy, capsys):
    config = run_copy / "config.toml"
    config.write_text(config.read_text().replace("seed = 0", "seed = -5"))
    assert main(["pretrain", "--resume", str(run_copy), "--epochs", "2"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot resume {run_copy}: {config}: [train] seed = -5 is out of range")
    assert "undo the edit of config.toml" in line


def _damage(run: Path, change) -> None:
    path = run / "checkpoints" / "last.pt"
    record = torch.load(path, weights_only=True)
    change(record)
    torch.save(record, path)


def _wrong_shape(record: dict) -> None:
    name = next(k for k, v in record["model"].items() if v.ndim == 2)
    record["model"][name] = torch.zeros(7, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r.pop("scheme"),
            "it lacks scheme (a damaged file, or not a checkpoint of protsteps pretrain)",
        ),
        (lambda r: r.pop("model") and r.pop("step"), "it lacks step, model"),
        (lambda r: r.update(step=-3), "step = -3 (expected a step count >= 0)"),
        (lambda r: r.update(step="12"), "step = '12' (expected a step count >= 0)"),
        (lambda r: r.update(step=10**6), "it is at step 1000000, beyond the"),
        (_wrong_shape, "its weights do not fit the run's model ("),
        (
            lambda r: r["model"].pop(next(iter(r["model"]))),
            "its weights do not fit the run's model (missing ",
        ),
        (
            lambda r: r.update(scheme={"optimizer": 5}),
            "the scheme's state (optimiser, schedule) cannot be loaded",
        ),
    ],
)
def test_a_damaged_last_pt_is_one_line_with_the_way_out(run_copy, capsys, change, message):
    _damage(run_copy, change)
    assert main(["pretrain", "--resume", str(run_copy), "--epochs", "2", "-q"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot resume from {run_copy / 'checkpoints' / 'last.pt'}: "), line
    assert message in line, line
    assert f"cp {run_copy / 'checkpoints' / 'best.pt'} {run_copy / 'checkpoints' / 'last.pt'}" in line
    assert f"rm -r {run_copy}" in line


def test_load_raw_reads_a_normal_run_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 3\n\n[[tasks]]\nname = "distance"\nweights = [1, 2]\n')
    assert load_raw(path) == {"train": {"epochs": 3}, "tasks": [{"name": "distance", "weights": [1, 2]}]}
