"""Freed tensor memory kept for reuse (protsteps.allocator): fewer page faults, and left alone
where the user chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from protsteps import allocator
from protsteps.cli import main

# A step's pattern: several 2 MiB tensors held at once, written, then all freed.
_PATTERN = textwrap.dedent(
    """
    import resource, sys, torch
    from protsteps.allocator import keep_freed_memory
    print(keep_freed_memory(), file=sys.stderr)
    torch.set_num_threads(1)
    def step():
        held = [torch.ones(512, 1024) for _ in range(8)]
        del held
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
    """
)


def _faults_per_step(tmp_path: Path, **env: str) -> tuple[float, str]:
    """The most faults per step of three processes running the pattern (glibc's own allocator
    takes ~4,065 in about two processes of three here and ~229 in the third, by where the heap
    and the libraries' mappings landed), and what keep_freed_memory said."""
    script = tmp_path / "pattern.py"
    script.write_text(_PATTERN)
    environment = {k: v for k, v in os.environ.items() if k not in ("PROTSTEPS_MALLOC", "GLIBC_TUNABLES")}
    runs = [
        subprocess.run(
            [sys.executable, str(script)],
            env={**environment, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        for _ in range(3)
    ]
    return max(float(done.stdout.strip()) for done in runs), runs[0].stderr.strip()


@pytest.mark.skipif(allocator._libc() is None, reason="the C library is not glibc")
def test_kept_memory_spares_the_page_faults_of_each_step(tmp_path):
    kept, said = _faults_per_step(tmp_path)
    system, said_system = _faults_per_step(tmp_path, PROTSTEPS_MALLOC="system")
    assert said.startswith("allocator keeps freed memory"), said
    assert said_system == "allocator left as it is (PROTSTEPS_MALLOC=system)"
    if system < 500:
        pytest.skip(f"glibc's own allocator took at most {system:.0f} faults per step in three runs")
    # 8 x 2 MiB written per step: about 4,100 fresh pages without keeping, a few dozen with
    assert kept < system / 10, (kept, system)


@pytest.fixture
def fresh(monkeypatch):
    """keep_freed_memory as if not yet called in this process, with mallopt recorded instead
    of called."""
    monkeypatch.setattr(allocator, "_STATE", {})
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, name: int, value: int) -> int:
            calls.append((name, value))
            return 1

    monkeypatch.setattr(allocator, "_libc", lambda: FakeLibc())
    for name in ("PROTSTEPS_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_the_thresholds_are_set_once_per_process(fresh):
    first = allocator.keep_freed_memory()
    assert first.startswith("allocator keeps freed memory")
    assert sorted(fresh) == sorted(
        [(-3, allocator.MMAP_THRESHOLD), (-1, allocator.KEEP_BYTES), (-2, 64 << 20)]
    )
    assert allocator.keep_freed_memory() == first
    assert len(fresh) == 3  # not set again


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("PROTSTEPS_MALLOC", "System", "PROTSTEPS_MALLOC=system"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", "GLIBC_TUNABLES sets glibc.malloc"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc is preloaded"),
    ],
)
def test_a_users_own_allocator_choice_is_left_alone(fresh, monkeypatch, name, value, why):
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() == f"allocator left as it is ({why})"
    assert fresh == []


def test_another_c_library_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_STATE", {})
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    monkeypatch.delenv("PROTSTEPS_MALLOC", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert allocator.keep_freed_memory() == "allocator left as it is (the C library is not glibc)"


@pytest.mark.parametrize("command", ["pretrain", "finetune", "embed"])
def test_the_training_commands_keep_freed_memory(monkeypatch, tmp_path, command):
    called = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: called.append(command) or "")
    # arguments that fail after the command's start (a missing input), so nothing runs
    missing = str(tmp_path / "missing.pdb")
    arguments = {
        "pretrain": ["pretrain", missing, "--out", str(tmp_path / "run")],
        "finetune": ["finetune", str(tmp_path / "no.csv"), "--from", "none", "--out", str(tmp_path / "f")],
        "embed": ["embed", missing, "--from", str(tmp_path / "no-run"), "--out", str(tmp_path / "e.npz")],
    }[command]
    main(arguments)
    assert called == [command]
