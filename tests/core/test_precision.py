"""Mixed precision ([train] precision, finetune --precision) on CPU with bfloat16: losses
finite, forward passes really in bfloat16, the pseudo bi-level second-order path included,
weights and checkpoints float32; "16" refused on CPU; resume refuses a changed precision;
benchmarks/gpu_check.sh parses and refuses to run without CUDA."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

import protsteps
from protsteps.cli import main
from protsteps.config import fields_of, from_dict
from protsteps.downstream import FinetuneConfig, finetune, read_manifest
from protsteps.errors import ConfigError
from protsteps.model import compose
from protsteps.optim import SchemeSetup
from protsteps.precision import autocast, check_precision
from protsteps.registry import default_catalog
from protsteps.runconfig import TrainConfig, load_run_config
from protsteps.schema import config_schema
from protsteps.training import load_checkpoint
from tests import cli_args

ROOT = Path(__file__).resolve().parents[2]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
CPU = torch.device("cpu")


@contextmanager
def linear_output_dtypes() -> Iterator[set[torch.dtype]]:
    """The dtypes every ``nn.Linear`` forward returned while the context was open."""
    seen: set[torch.dtype] = set()

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
            seen.add(output.dtype)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


pretrain_args = functools.partial(
    cli_args.pretrain_args, teacher=None, batch_size=3, epochs=2, num_pairs=64, sets=["train.log_every=1"]
)


def float_tensors(value: object) -> Iterator[torch.Tensor]:
    """Every floating-point tensor inside a checkpoint record."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from float_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from float_tensors(item)


def test_precision_is_a_declared_choice_and_an_integer_means_its_digits():
    assert TrainConfig().precision == "32" and FinetuneConfig().precision == "32"
    assert from_dict(TrainConfig, {"precision": 16}, section="[train]").precision == "16"
    assert from_dict(TrainConfig, {"precision": "bf16"}, section="[train]").precision == "bf16"
    with pytest.raises(ConfigError, match=r"\[train\] precision: 'fp8' is not one of '32', 'bf16', '16'"):
        from_dict(TrainConfig, {"precision": "fp8"}, section="[train]")
    with pytest.raises(ConfigError, match="is not one of"):
        from_dict(TrainConfig, {"precision": 64}, section="[train]")
    # declared as a Literal: the JSON Schema and the config reference list the choices
    assert config_schema(TrainConfig)["properties"]["precision"]["enum"] == ["32", "bf16", "16"]
    assert config_schema(FinetuneConfig)["properties"]["precision"]["enum"] == ["32", "bf16", "16"]
    assert {f.name: f.choices for f in fields_of(TrainConfig)}["precision"] == ("32", "bf16", "16")


def test_float16_on_cpu_is_refused_in_one_line(small_structures, tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        check_precision("16", CPU)
    check_precision("bf16", CPU)
    run = tmp_path / "run"
    args = pretrain_args(small_structures[:3], run, tmp_path / "cache", "--teacher", "none")
    assert main([*args, "--set", "train.precision=16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert '[train] precision = "16" needs a CUDA device' in err and 'use "bf16"' in err
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_a_bf16_pretrain_on_cpu_runs_in_bfloat16_and_keeps_float32_weights(small_structures, tmp_path):
    run = tmp_path / "run"
    args = pretrain_args(small_structures, run, tmp_path / "cache", "--teacher", "none")
    with linear_output_dtypes() as seen:
        assert main([*args, "--set", 'train.precision="bf16"']) == 0
    assert torch.bfloat16 in seen  # the step's forward ran under autocast
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train and all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in train)
    assert 'precision = "bf16"' in (run / "config.toml").read_text()
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["config"]["train"]["precision"] == "bf16"
    tensors = list(float_tensors([checkpoint["model"], checkpoint["scheme"]]))
    assert tensors and {t.dtype for t in tensors} == {torch.float32}
    encoder = torch.load(run / "encoder.pt", weights_only=True)
    assert {t.dtype for t in float_tensors(encoder)} == {torch.float32}

    # float32 (the default) runs no Linear in bfloat16
    with linear_output_dtypes() as seen:
        assert (
            main(pretrain_args(small_structures, tmp_path / "fp32", tmp_path / "cache", "--teacher", "none"))
            == 0
        )
    assert torch.bfloat16 not in seen


@pytest.mark.slow
def test_resume_refuses_a_changed_precision(small_structures, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(small_structures[:4], run, tmp_path / "cache", "--teacher", "none")) == 0
    config = run / "config.toml"
    config.write_text(config.read_text().replace('precision = "32"', 'precision = "bf16"'))
    assert main(["pretrain", "--resume", str(run), "--epochs", "3", "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and '[train] precision "32" -> "bf16"' in err


def bilevel(small_structures: list[Path], weights: Path, *extra: str):
    """A pseudo bi-level composition with a tiny ESM-2 teacher, set up on the CPU, in eval
    mode (no dropout), and a batch of three proteins."""
    catalog = default_catalog()
    config = load_run_config(
        None,
        catalog,
        components={"encoder": "gin", "teacher": "esm", "scheme": "pseudo_bilevel"},
        sets=[
            f'teacher.weights="{weights}"',
            "encoder.hidden_dim=16",
            "tasks.distance.num_pairs=32",
            "train.lr=0.01",
            "scheme.inner_lr=0.5",
            "scheme.anneal_inner_lr=false",
            'train.precision="bf16"',
            *extra,
        ],
    )
    torch.manual_seed(0)
    composition = compose(config, catalog)
    composition.scheme.setup(
        SchemeSetup(
            model=composition.model, train=config.train, total_steps=10, device=CPU, epoch_starts=[0, 10]
        )
    )
    composition.model.eval()
    graphs = [g for p in small_structures[:3] for g in protsteps.featurize(p)]
    return composition, protsteps.collate(graphs)


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    x = torch.cat([t.reshape(-1) for t in a])
    y = torch.cat([t.reshape(-1) for t in b])
    return float(torch.dot(x, y) / (x.norm() * y.norm()))


@pytest.mark.slow
def test_the_pseudo_bilevel_second_order_path_under_bf16_autocast(small_structures, tiny_esm_weights):
    composition, batch = bilevel(small_structures, tiny_esm_weights)
    scheme, model = composition.scheme, composition.model
    _, exact = scheme.hypergradient(batch, torch.Generator().manual_seed(1))
    with autocast("bf16", CPU), linear_output_dtypes() as seen:
        loss, grads = scheme.hypergradient(batch, torch.Generator().manual_seed(1))
        diagnostics = scheme.diagnose(*model.corrupt(batch, torch.Generator().manual_seed(1)))
    assert torch.bfloat16 in seen
    assert math.isfinite(float(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)
    # bfloat16 rounds, the direction stays
    assert cosine(grads, exact) > 0.95, cosine(grads, exact)
    # the second-order term (through the differentiable inner step) is there and finite
    assert 0 < diagnostics["lookahead/second_order"] < math.inf
    assert math.isfinite(diagnostics["lookahead/cosine_joint"])

    teacher_before = {k: v.detach().clone() for k, v in model.teacher.tail_parameters().items()}
    student_before = [p.detach().clone() for p in model.student_parameters()]
    for seed in range(2):
        with autocast("bf16", CPU):
            values = scheme.step(batch, torch.Generator().manual_seed(seed))
        assert all(math.isfinite(v) for v in values.values()), values
        assert "mi" in values and "critic_loss" in values
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.student_parameters(), student_before, strict=True))
    for name, value in model.teacher.tail_parameters().items():
        assert torch.equal(value, teacher_before[name])  # pseudo: theta' is discarded
    state = scheme.state_dict()
    assert {t.dtype for t in float_tensors(state)} == {torch.float32}


def test_the_critic_trains_in_float32_under_autocast(small_structures, tiny_esm_weights):
    # the step runs under autocast; the critic's own updates (and the check of whether its
    # bound is silent) run in float32: no loss scaling is needed, nothing underflows to 0
    composition, _ = bilevel(small_structures, tiny_esm_weights)
    scheme = composition.scheme
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        for m in scheme.critic.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    s = torch.randn(4, scheme.critic.f_s.mlp[0].in_features)
    g = torch.randn(4, scheme.critic.f_g.mlp[0].in_features)
    before = [p.detach().clone() for p in scheme.critic.parameters()]
    with autocast("bf16", CPU):
        loss = scheme._train_critic(s, g)
    for hook in hooks:
        hook.remove()
    assert seen == {torch.float32}
    assert math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, scheme.critic.parameters(), strict=True))


@pytest.mark.slow
def test_a_bf16_pseudo_bilevel_pretrain_through_the_cli(small_structures, tiny_esm_weights, tmp_path):
    run = tmp_path / "run"
    args = pretrain_args(
        small_structures[:4],
        run,
        tmp_path / "cache",
        "--teacher",
        "esm",
        "--scheme",
        "pseudo_bilevel",
        "--set",
        f'teacher.weights="{tiny_esm_weights}"',
        "--set",
        'train.precision="bf16"',
        "--set",
        "train.valid_fraction=0.25",
    )
    assert main(args) == 0
    train = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line
    ]
    assert train and all(math.isfinite(r["loss"]) and math.isfinite(r["mi"]) for r in train)
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert {t.dtype for t in float_tensors([checkpoint["model"], checkpoint["scheme"]])} == {torch.float32}


@pytest.mark.slow
def test_a_bf16_finetune_on_cpu(small_structures, tmp_path):
    path = tmp_path / "labels.tsv"
    splits = ["train", "train", "train", "train", "valid", "test"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["path", "chain", "label", "split"])
        for p, label, split in zip(small_structures, "xyxyxy", splits, strict=True):
            writer.writerow([str(p), "", label, split])
    scratch = load_run_config(
        None, default_catalog(), components={"teacher": "none"}, sets=["encoder.hidden_dim=16"]
    )
    config = FinetuneConfig(
        epochs=2, batch_size=2, mode="full", precision="bf16", cache_dir=str(tmp_path / "cache")
    )
    with linear_output_dtypes() as seen:
        result = finetune(
            read_manifest(path), None, tmp_path / "run", config, scratch=scratch, show_progress=False
        )
    assert torch.bfloat16 in seen
    assert all(math.isfinite(h["train_loss"]) for h in result.metrics["history"])
    assert result.metrics["config"]["finetune"]["precision"] == "bf16"
    for name in ("head.pt", "encoder.pt"):
        record = torch.load(tmp_path / "run" / name, weights_only=True)
        assert {t.dtype for t in float_tensors(record)} == {torch.float32}, name


def test_finetune_refuses_float16_on_cpu(small_structures, tmp_path, capsys):
    labels = tmp_path / "labels.tsv"
    labels.write_text(f"path\tlabel\n{small_structures[0]}\tx\n{small_structures[1]}\ty\n")
    out = tmp_path / "run"
    args = [
        "finetune",
        str(labels),
        "--from",
        "none",
        "--out",
        str(out),
        "--precision",
        "16",
        "--device",
        "cpu",
    ]
    assert main([*args, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and '--precision = "16" needs a CUDA device' in err


def test_gpu_check_script_parses_and_refuses_without_cuda(tmp_path):
    assert GPU_CHECK.is_file()
    bash = shutil.which("bash")
    assert bash is not None
    syntax = subprocess.run([bash, "-n", str(GPU_CHECK)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run for minutes")
    # the script finds protsteps on PATH, as in an activated environment
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": path}
    result = subprocess.run([bash, str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [
        "gpu_check.sh: no CUDA device is visible to torch (torch.cuda.is_available() is False); "
        "run it on a machine with an NVIDIA GPU and a CUDA build of torch"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing was left behind
