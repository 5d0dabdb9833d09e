"""Two processes under torchrun (gloo on CPU): DDP keeps replicas identical, the loss goes
down, and only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_two_process_pretrain_keeps_replicas_identical(structures_dir, tiny_esm_weights, tmp_path):
    names = ["1BRS_A", "1BRS_D", "1I07_A", "1LQM_F", "1NPO_A", "1O9Y_A", "1O9Y_D", "1PXV_C"]
    inputs = [str(structures_dir / "masif" / f"{n}.pdb.gz") for n in names]
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "protsteps",
        "pretrain",
        *inputs,
        "--out",
        str(run),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--teacher",
        "esm",
        "--set",
        f'teacher.weights="{tiny_esm_weights}"',
        "--batch-size",
        "2",
        "--epochs",
        "4",
        "--set",
        "train.log_every=1",
        "--set",
        "train.valid_fraction=0",
        "--set",
        "train.lr=0.003",
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: 8 steps, 4 epochs") == 1  # rank 0 reports, rank 1 does not

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))  # one writer: no duplicated lines
    replicas = [r for r in records if r["split"] == "replicas"]
    assert replicas == [{"step": 8, "split": "replicas", "world_size": 2, "max_parameter_difference": 0.0}]
    first, last = train[0]["loss"], sum(r["loss"] for r in train[-2:]) / 2
    assert last < first, (first, last)
    assert all("mi" in r for r in train)  # the pseudo bi-level scheme ran under DDP
    # each rank featurized its own share of the inputs into the one store (a shard each),
    # then both trained on the union
    import sqlite3

    with sqlite3.connect(tmp_path / "cache" / "index.sqlite") as index:
        per_shard = [n for (n,) in index.execute("SELECT COUNT(*) FROM entries GROUP BY shard")]
    assert sorted(per_shard) != [len(names)] and sum(per_shard) == len(names), per_shard
