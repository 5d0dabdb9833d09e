"""What schemes share: the setup they receive, optimisers, schedules, finiteness checks.

A scheme's :meth:`~protsteps.Scheme.setup` receives a :class:`SchemeSetup`. ``wrap`` turns a
module into what the step should call: the module itself in one process, a
``DistributedDataParallel`` around it under ``torchrun``, so that a scheme written once
runs in both.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ProtstepsError

__all__ = [
    "NonFiniteLossError",
    "SchemeSetup",
    "all_finite",
    "all_processes",
    "make_optimizer",
    "make_scheduler",
    "mean_across_processes",
    "schedule_factor",
]


class NonFiniteLossError(ProtstepsError):
    """A loss was NaN or infinite; raised before any parameter changed."""


@dataclasses.dataclass
class SchemeSetup:
    """What a scheme gets once, before the first step.

    model: the :class:`~protsteps.model.PretrainModel` (student modules and teacher).
    train: the run's :class:`~protsteps.runconfig.TrainConfig`.
    total_steps: optimiser steps the whole run will take (for schedules).
    device: where batches and parameters live.
    wrap: module -> module to call in the step (identity, or DDP under torchrun).
    distributed: True under torchrun with more than one process.
    epoch_starts: the global step at which each epoch starts, then ``total_steps`` (empty when
        unknown); per-epoch schedules (``epoch_cosine``) need it.
    notify: says one line to the user (the run's progress display); a scheme uses it for
        what should be said once, not logged every step.
    """

    model: Any
    train: Any
    total_steps: int
    device: torch.device
    wrap: Callable[[nn.Module], nn.Module] = lambda module: module
    distributed: bool = False
    epoch_starts: Sequence[int] = ()
    notify: Callable[[str], None] = lambda message: None


def make_optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam without weight decay (the paper's optimiser), AdamW with it."""
    params = list(params)
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr)


def schedule_factor(
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    epoch_starts: Sequence[int] = (),
) -> Callable[[int], float]:
    r"""The learning-rate multiplier as a function of the number of steps taken.

    Linear warm-up over ``warmup_steps``, then ``constant`` (1), ``cosine`` (per step, from 1
    to 0 at ``total_steps``) or ``epoch_cosine`` (the released STEPS code: constant within an
    epoch, :math:`(1 + \cos(\pi e / E)) / 2` in epoch :math:`e` of :math:`E`, given the steps
    where epochs start in ``epoch_starts``).
    """
    if schedule not in ("constant", "cosine", "epoch_cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or epoch_cosine")
    starts = list(epoch_starts)
    if schedule == "epoch_cosine" and len(starts) < 2:
        raise ValueError(
            "the epoch_cosine schedule needs the steps where epochs start (SchemeSetup.epoch_starts)"
        )
    epochs = len(starts) - 1

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "epoch_cosine":
            epoch = min(max(bisect.bisect_right(starts, step) - 1, 0), epochs - 1)
            return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    epoch_starts: Sequence[int] = (),
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per training step with :func:`schedule_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule_factor(schedule, warmup_steps, total_steps, epoch_starts)
    )


def all_finite(value: Tensor, distributed: bool) -> bool:
    """Whether ``value`` is finite in every process (so that all processes skip or stop
    together instead of deadlocking in a collective)."""
    flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=value.device)
    if distributed:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def all_processes(flag: bool, distributed: bool, device: torch.device | None = None) -> bool:
    """Whether ``flag`` holds in every process (a collective: every process must call it;
    ``device`` is where the process group communicates, the GPU under nccl)."""
    if not distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item() == 1.0)


def mean_across_processes(tensors: list[Tensor], distributed: bool) -> None:
    """Average tensors (gradients of modules outside DDP) over processes, in place."""
    if not distributed or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
