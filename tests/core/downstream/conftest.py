"""Fixtures of the downstream tests: one featurize cache and one quick pretrain run per
session (through the CLI, as a user makes it)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="session")
def pretrain_run(small_structures, graph_cache, tmp_path_factory) -> Path:
    """``protsteps pretrain`` on six real structures: no teacher, 2 epochs, width 32."""
    from protsteps.cli import main

    run = tmp_path_factory.mktemp("pretrain") / "run"
    args = [
        "pretrain",
        *map(str, small_structures),
        "--out",
        str(run),
        "--cache-dir",
        str(graph_cache),
        "--teacher",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        "3",
        "--set",
        "encoder.hidden_dim=32",
        "--set",
        "tasks.distance.num_pairs=64",
        "-q",
    ]
    assert main(args) == 0
    assert (run / "encoder.pt").is_file()
    return run


@pytest.fixture(scope="session")
def labels_dir(shared_data: Path) -> Path:
    path = shared_data / "labels"
    if not (path / "scop2_chains.tsv").exists():
        pytest.skip(f"labelled sets missing under {path}")
    return path
