"""--threads / [train] threads: the automatic choice, its limits, and torch's setting."""

from __future__ import annotations

import pytest
import torch

from protsteps import threads as T
from protsteps.config import from_dict
from protsteps.errors import ConfigError
from protsteps.runconfig import TrainConfig


@pytest.fixture
def eight_cores(monkeypatch):
    """A machine of 8 physical cores, no OMP_NUM_THREADS, one process."""
    monkeypatch.setattr(T, "physical_cores", lambda: (8, True))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_a_number_given_is_used():
    assert T.choose_threads(3) == T.ThreadChoice(3, "as asked")
    with pytest.raises(ValueError, match="threads must be >= 0"):
        T.choose_threads(-1)


def test_auto_shares_the_physical_cores_among_processes_and_loader_workers(eight_cores, monkeypatch):
    assert T.choose_threads(0, load=None).threads == 8
    assert T.choose_threads(0, workers=1, load=None).threads == 4
    assert T.choose_threads(0, workers=3, processes=2, load=None).threads == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's processes on this node
    choice = T.choose_threads(0, load=None)
    assert choice.threads == 2
    assert choice.reason == "auto: 8 physical cores / 4 processes (4 computing)"
    assert T.choose_threads(0, workers=7, load=None).threads == 1  # never below one


def test_auto_takes_fewer_threads_on_a_busy_machine(eight_cores):
    assert T.choose_threads(0, load=0.0).threads == 8
    assert T.choose_threads(0, load=0.3).threads == 7  # whole idle cores only
    busy = T.choose_threads(0, load=5.8)  # two cores idle
    assert busy.threads == 2 and "load average 5.8" in busy.reason
    assert T.choose_threads(0, load=6.2).threads == 1
    assert T.choose_threads(0, load=20.0).threads == 1
    assert T.choose_threads(0, workers=1, load=2.0).threads == 3  # 6 idle cores, 2 processes


def test_auto_follows_omp_num_threads(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert T.choose_threads(0, load=20.0) == T.ThreadChoice(3, "auto: OMP_NUM_THREADS")
    assert T.choose_threads(5).threads == 5  # a number given wins


def test_this_machine_has_at_least_one_core():
    cores, _ = T.physical_cores()
    assert 1 <= cores <= T.usable_cpus()


def test_using_threads_sets_torch_and_restores_it():
    before = torch.get_num_threads()
    with T.using_threads(2) as choice:
        assert choice.threads == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_train_threads_is_checked():
    assert TrainConfig().threads == 0
    assert from_dict(TrainConfig, {"threads": 2}, section="[train]").threads == 2
    with pytest.raises(ConfigError, match="threads"):
        from_dict(TrainConfig, {"threads": -1}, section="[train]")
