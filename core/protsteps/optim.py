"""What schemes share: the setup they receive, the student's optimiser, schedules, finiteness
checks and what a step returns. The public toolkit of a scheme plugin; the built-in schemes
(``joint``, ``pseudo_bilevel``) use only this module and :class:`~protsteps.model.PretrainModel`.

A scheme's :meth:`~protsteps.Scheme.setup` receives a :class:`SchemeSetup`. ``wrap`` turns a
module into what the step should call: the module itself in one process, a
``DistributedDataParallel`` around it under ``torchrun``, so that a scheme written once
runs in both. A step of the ``joint`` scheme, with these helpers:

>>> batch, states = model.corrupt(batch, generator)                  # doctest: +SKIP
>>> with torch.no_grad():                                            # doctest: +SKIP
...     features = model.teacher_features(batch)
>>> loss, logs = step_module(batch, states, features)                # doctest: +SKIP
>>> raise_if_not_finite(loss, batch, setup.distributed)              # doctest: +SKIP
>>> lr = student.lr                                                  # doctest: +SKIP
>>> grad_norm = student.apply(loss)                                  # doctest: +SKIP
>>> {"loss": float(loss), "lr": lr, "grad_norm": grad_norm, **logs_to_floats(logs)}  # doctest: +SKIP

See "Writing a scheme" in ``docs/plugins.md`` for the whole contract.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .errors import RunFailure
from .precision import autocast_off, grad_scaler

if TYPE_CHECKING:
    from .graph import Batch

__all__ = [
    "NonFiniteLossError",
    "SchemeSetup",
    "StudentOptimisation",
    "all_finite",
    "all_processes",
    "describe_batch",
    "logs_to_floats",
    "make_optimizer",
    "make_scheduler",
    "mean_across_processes",
    "raise_if_not_finite",
    "schedule_factor",
]


class NonFiniteLossError(RunFailure):
    """A loss was NaN or infinite; raised before any parameter changed (exit status 1)."""


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


#: devices and dtypes torch's fused Adam kernel takes
_FUSED_DEVICES = frozenset({"cpu", "cuda"})
_FUSED_DTYPES = frozenset({torch.float64, torch.float32, torch.bfloat16, torch.float16})


def make_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam without weight decay (the paper's optimiser), AdamW with it.

    Both use torch's fused kernel (``fused=True``: one pass over all parameters instead of
    about ten small operations per parameter tensor; a third of the optimiser's time on CPU,
    the same update up to float rounding) when every parameter is on a CPU or CUDA device
    in a floating dtype, and the per-tensor loop otherwise.
    """
    # parameters, or parameter groups (dicts with "params"), each made a list once
    groups: list[Any] = [
        {**item, "params": list(item["params"])} if isinstance(item, dict) else item for item in params
    ]
    tensors = [p for item in groups for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = bool(tensors) and all(
        p.device.type in _FUSED_DEVICES and p.dtype in _FUSED_DTYPES for p in tensors
    )
    options: dict[str, Any] = {"fused": True} if fused else {}
    if weight_decay > 0:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **options)
    return torch.optim.Adam(groups, lr=lr, **options)


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


class StudentOptimisation:
    """The optimiser, learning-rate schedule and gradient clipping of the student's parameters
    (:meth:`~protsteps.model.PretrainModel.student_parameters`: encoder and task heads), as
    ``[train]`` configures them. Both built-in schemes use it; a scheme plugin that updates the
    student the usual way should too, so that ``[train]`` means the same under every scheme.

    Parameters
    ----------
    setup:
        The scheme's :class:`SchemeSetup`. Reads ``model``, ``train.lr``,
        ``train.weight_decay``, ``train.schedule``, ``train.warmup_steps``,
        ``train.grad_clip``, ``train.precision``, ``total_steps``, ``epoch_starts`` and ``device``.

    Attributes
    ----------
    params:
        The student's parameters, in the order the optimiser holds them.
    optimizer:
        Adam, or AdamW when ``train.weight_decay > 0`` (:func:`make_optimizer`).
    scheduler:
        A ``LambdaLR`` with :func:`schedule_factor`, stepped once per :meth:`apply`.
    grad_clip:
        The maximal gradient norm; 0 or less: no clipping.

    Examples
    --------
    >>> student = StudentOptimisation(setup)        # doctest: +SKIP
    >>> lr = student.lr                             # the rate this step uses  # doctest: +SKIP
    >>> grad_norm = student.apply(loss)             # backward, clip, step  # doctest: +SKIP
    """

    def __init__(self, setup: SchemeSetup) -> None:
        self.params: list[nn.Parameter] = setup.model.student_parameters()
        train = setup.train
        self.optimizer = make_optimizer(self.params, train.lr, train.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer, train.schedule, train.warmup_steps, setup.total_steps, setup.epoch_starts
        )
        self.grad_clip: float = train.grad_clip
        #: scales the loss under ``[train] precision = "16"`` on CUDA (else ``None``)
        self.scaler = grad_scaler(getattr(train, "precision", "32"), setup.device)

    @property
    def lr(self) -> float:
        """The learning rate the next :meth:`apply` uses (log it before calling :meth:`apply`)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def lr_factor(self) -> float:
        """The schedule's current multiplier of ``train.lr`` (warm-up and decay)."""
        return float(self.scheduler.get_last_lr()[0]) / float(self.scheduler.base_lrs[0])

    def apply(self, loss: Tensor) -> float:
        """Backpropagate ``loss`` into the student's parameters only (not the teacher's nor any
        module the scheme owns), clip the gradient norm to ``grad_clip``, take one optimiser
        and one schedule step. The backward runs with autocast off, whatever the step's forward
        ran under (``[train] precision``); under ``"16"`` on CUDA the loss is scaled by a
        ``GradScaler``, unscaled before clipping, and a step whose gradients overflowed is
        skipped (the scaler's state is part of :meth:`state_dict`).

        Parameters
        ----------
        loss:
            A finite scalar (check it with :func:`raise_if_not_finite` first).

        Returns
        -------
        float
            The gradient norm before clipping.
        """
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_off():  # the step's forward may run under autocast
            scaled = loss if self.scaler is None else self.scaler.scale(loss)
            scaled.backward(inputs=self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            self.params, self.grad_clip if self.grad_clip > 0 else float("inf")
        )
        if self.scaler is None:
            self.optimizer.step()
        else:  # skips the step when the scaled gradients overflowed, and adapts the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's and the schedule's state, for :meth:`Scheme.state_dict`."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (resume continues exactly)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def describe_batch(batch: Batch) -> str:
    """The structures of a batch as ``source:chain``, the first 8 and how many more, for
    error messages (``non-finite loss nan on batch of 1abc.cif:A, 2xyz.pdb:B``)."""
    names = [f"{source}:{chain}" for source, chain in zip(batch.sources, batch.chain_ids, strict=True)]
    shown = ", ".join(names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def logs_to_floats(logs: Mapping[str, Tensor | float]) -> dict[str, float]:
    """What :meth:`Scheme.step` returns from per-task logs: every value as a float.

    Parameters
    ----------
    logs:
        ``<task>/loss`` and ``<task>/<metric>`` as 0-d tensors or numbers, as
        :meth:`~protsteps.model.PretrainModel.pretext_loss` returns them.
    """
    return {k: float(v) for k, v in logs.items()}


def raise_if_not_finite(loss: Tensor, batch: Batch, distributed: bool) -> None:
    """Raise :class:`NonFiniteLossError` naming the batch's structures when ``loss`` is NaN or
    infinite in any process. Call it before changing any parameter: the training loop then
    stops with the last checkpoint intact (all processes together under ``torchrun``: it is a
    collective, so every process must call it)."""
    if not all_finite(loss.detach(), distributed):
        raise NonFiniteLossError(
            f"non-finite loss {float(loss.detach())} on batch of {describe_batch(batch)}"
        )
