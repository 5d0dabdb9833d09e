"""What schemes share: the setup they receive, optimisers, schedules, finiteness checks.

A scheme's :meth:`~protsteps.Scheme.setup` receives a :class:`SchemeSetup`. ``wrap`` turns a
module into what the step should call: the module itself in one process, a
``DistributedDataParallel`` around it under ``torchrun``, so that a scheme written once
runs in both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ProtstepsError

__all__ = [
    "NonFiniteLossError",
    "SchemeSetup",
    "all_finite",
    "make_optimizer",
    "make_scheduler",
    "mean_across_processes",
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
    """

    model: Any
    train: Any
    total_steps: int
    device: torch.device
    wrap: Callable[[nn.Module], nn.Module] = lambda module: module
    distributed: bool = False


def make_optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam without weight decay (the paper's optimiser), AdamW with it."""
    params = list(params)
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then constant or cosine decay to 0 at
    ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def all_finite(value: Tensor, distributed: bool) -> bool:
    """Whether ``value`` is finite in every process (so that all processes skip or stop
    together instead of deadlocking in a collective)."""
    flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=value.device)
    if distributed:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


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
