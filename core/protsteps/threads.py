"""How many CPU threads torch uses: ``--threads N`` and ``[train] threads``.

torch's own default is one intra-op thread per core whatever else runs. On a shared machine
that is the slow choice: torch's threads wait for each other at every operation, and when
another job holds a core the wait is long (a 1-epoch pretrain on two busy cores took 5x as
long on two threads as on one; docs/benchmarks.md). ``0`` (auto) therefore chooses:

1. ``OMP_NUM_THREADS`` when it is set (a scheduler's or a user's explicit choice);
2. otherwise the physical cores this process may run on (its CPU affinity and a cgroup CPU
   quota, hyper-threads counted once; logical CPUs where the topology cannot be read),
   divided among the processes that compute at once on this node (``torchrun``'s
   ``LOCAL_WORLD_SIZE``) and each one's data-loading worker processes;
3. at most the whole cores the load average leaves idle (one-minute load, shared out the
   same way), so that a busy machine gets fewer threads instead of oversubscribed ones;

and always at least 1. ``pretrain`` and ``finetune`` print the chosen number and why, and
record it in the run folder (``metrics.jsonl``'s ``threads``; ``metrics.json``'s
``threads``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = [
    "ThreadChoice",
    "allow_interop",
    "choose_threads",
    "physical_cores",
    "usable_cpus",
    "using_threads",
]


@dataclasses.dataclass(frozen=True)
class ThreadChoice:
    """The number of torch intra-op threads and how it was chosen."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"threads {self.threads} ({self.reason})"


def _affinity() -> set[int] | None:
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return set(getter(0))
    except OSError:
        return None


def _cgroup_quota() -> float | None:
    """CPUs a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota allows, if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cpus() -> int:
    """Logical CPUs this process may run on (affinity, then ``os.cpu_count``)."""
    cpus = _affinity()
    return len(cpus) if cpus else max(1, os.cpu_count() or 1)


def physical_cores() -> tuple[int, bool]:
    """Physical cores among the CPUs this process may run on, capped by a cgroup CPU quota,
    and whether the topology could be read (without it: logical CPUs)."""
    cpus = _affinity() or set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            cores = set()
            break
        cores.add((package, core))
    known = bool(cores)
    count = len(cores) if known else max(1, len(cpus))
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count, known


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _local_processes() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def choose_threads(
    requested: int = 0,
    *,
    workers: int = 0,
    processes: int | None = None,
    load: float | None = -1.0,
) -> ThreadChoice:
    """The thread count for ``requested`` (> 0: that number; 0: auto, see the module
    docstring). ``workers``: data-loading processes beside each computing process;
    ``processes``: computing processes on this node (default ``LOCAL_WORLD_SIZE``);
    ``load``: the one-minute load average (default: read it; ``None``: ignore load)."""
    if requested < 0:
        raise ValueError(f"threads must be >= 0 (0: auto), got {requested}")
    if requested > 0:
        return ThreadChoice(requested, "as asked")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "auto: OMP_NUM_THREADS")
    processes = _local_processes() if processes is None else max(1, processes)
    sharing = processes * (1 + max(0, workers))
    cores, known = physical_cores()
    share = max(1, cores // sharing)
    what = f"{cores} {'physical cores' if known else 'CPUs'}"
    if sharing > 1:
        what += f" / {sharing} processes ({processes} computing"
        what += f", {workers} loader worker{'s' if workers > 1 else ''} each)" if workers > 0 else ")"
    load = _load_average() if load is not None and load < 0 else load
    if load is not None:
        # whole idle cores only: a thread on a core that another job also wants makes every
        # other thread wait at each operation (5-8x slower here), one thread fewer costs less
        idle = max(0.0, cores - load)
        fit = max(1, math.floor(idle / sharing))
        if fit < share:
            return ThreadChoice(fit, f"auto: {what}, load average {load:.1f}")
    return ThreadChoice(share, f"auto: {what}")


#: inter-op threads can be set once per process, before any inter-op work: only the command
#: line, which owns its process, asks for it (:func:`allow_interop`)
_INTEROP: dict[str, bool] = {"allowed": False, "set": False}


def allow_interop() -> None:
    """Let :func:`using_threads` set torch's inter-op pool too (the command line calls this)."""
    _INTEROP["allowed"] = True


def _set_interop(threads: int) -> None:
    if _INTEROP["set"] or not _INTEROP["allowed"]:
        return
    _INTEROP["set"] = True
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # inter-op work has started already: leave torch's choice
        pass


@contextmanager
def using_threads(
    requested: int = 0, *, workers: int = 0, processes: int | None = None
) -> Iterator[ThreadChoice]:
    """Run the block on the chosen number of intra-op threads (torch's setting is restored
    afterwards). Under the command line the inter-op pool is set to the same number too,
    once per process and only while torch still allows it."""
    choice = choose_threads(requested, workers=workers, processes=processes)
    before = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    _set_interop(choice.threads)
    try:
        yield choice
    finally:
        torch.set_num_threads(before)
