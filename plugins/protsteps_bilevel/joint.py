"""The joint scheme: minimise the weighted sum of the pretext losses.

.. math::

    L_{pre}(\\phi) = \\sum_t w_t L_t(\\phi)

over the student's parameters :math:`\\phi` (encoder and task heads). A teacher, when there
is one, only provides input features: it runs without gradients and never changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from protsteps import Batch, BuildContext, Scheme
from protsteps.optim import (
    NonFiniteLossError,
    SchemeSetup,
    all_finite,
    make_optimizer,
    make_scheduler,
)


@dataclasses.dataclass
class JointConfig:
    """The joint scheme has no settings of its own: learning rate, schedule and clipping
    are in ``[train]``."""


def describe_batch(batch: Batch) -> str:
    """The structures of a batch, for error messages."""
    names = [f"{source}:{chain}" for source, chain in zip(batch.sources, batch.chain_ids, strict=True)]
    shown = ", ".join(names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def logs_to_floats(logs: Mapping[str, Tensor | float]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


class StudentOptimisation:
    """The optimiser, schedule and clipping of the student's parameters, shared by the
    schemes."""

    def __init__(self, setup: SchemeSetup) -> None:
        self.params = setup.model.student_parameters()
        train = setup.train
        self.optimizer = make_optimizer(self.params, train.lr, train.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer, train.schedule, train.warmup_steps, setup.total_steps, setup.epoch_starts
        )
        self.grad_clip = train.grad_clip

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def lr_factor(self) -> float:
        """The schedule's current multiplier of ``train.lr`` (warm-up and decay)."""
        return float(self.scheduler.get_last_lr()[0]) / float(self.scheduler.base_lrs[0])

    def apply(self, loss: Tensor) -> float:
        """Backpropagate ``loss`` into the student only, clip, step; returns the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.params)
        norm = torch.nn.utils.clip_grad_norm_(
            self.params, self.grad_clip if self.grad_clip > 0 else float("inf")
        )
        self.optimizer.step()
        self.scheduler.step()
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class JointScheme(Scheme):
    """Weighted sum of the task losses; see the module docstring."""

    def __init__(self, config: JointConfig, context: BuildContext) -> None:
        self.config = config
        self._setup: SchemeSetup | None = None
        self._student: StudentOptimisation | None = None
        self._step_module: nn.Module | None = None

    def setup(self, setup: SchemeSetup) -> None:
        self._setup = setup
        self._student = StudentOptimisation(setup)
        self._step_module = setup.wrap(setup.model)

    def step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        if self._setup is None or self._student is None or self._step_module is None:
            raise RuntimeError("call setup() before step()")
        model = self._setup.model
        batch, states = model.corrupt(batch, generator)
        with torch.no_grad():
            features = model.teacher_features(batch)
        loss, logs = self._step_module(batch, states, features)
        if not all_finite(loss.detach(), self._setup.distributed):
            raise NonFiniteLossError(
                f"non-finite loss {float(loss.detach())} on batch of {describe_batch(batch)}"
            )
        lr = self._student.lr
        grad_norm = self._student.apply(loss)
        return {"loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm, **logs_to_floats(logs)}

    def state_dict(self) -> dict[str, Any]:
        if self._student is None:
            raise RuntimeError("call setup() before state_dict()")
        return {"student": self._student.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._student is None:
            raise RuntimeError("call setup() before load_state_dict()")
        self._student.load_state_dict(state["student"])
