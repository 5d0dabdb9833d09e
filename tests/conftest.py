"""Shared fixtures. Real structures come from ../shared/data (read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: protsteps' automatic thread count follows OMP_NUM_THREADS: the tests run on one thread per
#: process (pytest -n 2 on two cores; the ``one_thread`` fixture says why), whatever the load
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(os.environ.get("PROTSTEPS_SHARED_DATA", ROOT.parent / "shared" / "data"))
STRUCTURES = SHARED_DATA / "structures"
LABELS = SHARED_DATA / "labels"


@pytest.fixture(scope="session", autouse=True)
def private_cache_home(tmp_path_factory):
    """``XDG_CACHE_HOME`` in a temporary folder for the whole session: the tests never write
    into the user's ``~/.cache`` (graph store, trunk cache), and what a machine's cache holds
    (a legacy per-file cache, say, which ``pretrain`` mentions in a note) never changes what a
    test sees."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it are skipped with a reason where it is absent."""
    if not STRUCTURES.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set PROTSTEPS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def structures_dir(shared_data: Path) -> Path:
    return shared_data / "structures"


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module. For tiny models on a busy machine, handing work
    between threads costs far more than the arithmetic (milliseconds per op instead of
    microseconds); for reproducible numbers, one thread fixes the order of CPU reductions."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_esm_weights(tmp_path_factory) -> Path:
    """A small random ESM-2 checkpoint in fair-esm's on-disk format (2 layers, dim 32)."""
    from protsteps_esm.testing import write_esm2_checkpoint

    path = tmp_path_factory.mktemp("esm") / "esm2_tiny.pt"
    write_esm2_checkpoint(path, num_layers=2, embed_dim=32, attention_heads=4, seed=0)
    return path


@pytest.fixture(scope="session")
def small_structures(structures_dir: Path) -> list[Path]:
    """Six real single-chain structures of 59-108 residues (fast to featurize and train on)."""
    names = [
        "1BRS_A.pdb.gz",
        "1BRS_D.pdb.gz",
        "1I07_A.pdb.gz",
        "1LQM_F.pdb.gz",
        "1NPO_A.pdb.gz",
        "1O9Y_A.pdb.gz",
    ]
    paths = [structures_dir / "masif" / n for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared structures missing: {missing}")
    return paths
