"""A scheme that brings tasks in gradually: joint training whose task weights follow a schedule."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from protsteps import Batch, BuildContext, Scheme, option
from protsteps.errors import CompositionError
from protsteps.optim import SchemeSetup, StudentOptimisation, logs_to_floats, raise_if_not_finite


@dataclasses.dataclass
class TaskRampConfig:
    ramp_steps: int = option(
        100, "Steps over which the ramped tasks' weights rise from 0 to their run weights."
    )
    ramped: list[str] = option([], "Tasks whose weight is ramped; empty: every task but the first.")

    def __post_init__(self) -> None:
        if self.ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {self.ramp_steps}")


class TaskRampScheme(Scheme):
    r"""Minimise :math:`\sum_t w_t(k) L_t` over the student at step :math:`k`, where a ramped
    task's weight rises linearly, :math:`w_t(k) = w_t \min(1, (k + 1) / K)` with
    :math:`K` = ``ramp_steps``, and the other tasks keep their run weights :math:`w_t`.

    Why: a hard task (say masked residue types) can dominate the encoder's first updates
    before an easier geometric task has shaped it; ramping it in lets the easy task lead.
    The teacher, when there is one, only provides features, as in the ``joint`` scheme.
    """

    def __init__(self, config: TaskRampConfig, context: BuildContext) -> None:
        # the composed tasks are known when the scheme is built: refuse a name that is not one
        if context.tasks is not None:
            unknown = [name for name in config.ramped if name not in context.tasks]
            if unknown:
                raise CompositionError(
                    f"scheme 'task_ramp' ramps {', '.join(unknown)}, which the run does not train "
                    f"(its tasks: {', '.join(context.tasks)})"
                )
        self.config = config
        self.steps = 0
        self._setup: SchemeSetup | None = None
        self._student: StudentOptimisation | None = None
        self._step_module: nn.Module | None = None
        self._run_weights: dict[str, float] = {}
        self._ramped: list[str] = []

    def setup(self, setup: SchemeSetup) -> None:
        self._setup = setup
        self._student = StudentOptimisation(setup)
        self._step_module = setup.wrap(setup.model)
        self._run_weights = dict(setup.model.weights)
        self._ramped = list(self.config.ramped) or list(setup.model.weights)[1:]
        unknown = [name for name in self._ramped if name not in self._run_weights]
        if unknown:  # built without a composition's context: the same check, now
            raise CompositionError(f"scheme 'task_ramp' ramps {', '.join(unknown)}, which the model has not")

    def weight_factor(self, step: int) -> float:
        """The multiplier of the ramped tasks' weights at ``step`` (0-based)."""
        return min(1.0, (step + 1) / self.config.ramp_steps) if self.config.ramp_steps else 1.0

    def step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        if self._setup is None or self._student is None or self._step_module is None:
            raise RuntimeError("call setup() before step()")
        model = self._setup.model
        factor = self.weight_factor(self.steps)
        for name in self._ramped:  # model.weights is what pretext_loss sums the tasks with
            model.weights[name] = self._run_weights[name] * factor
        batch, states = model.corrupt(batch, generator)
        with torch.no_grad():
            features = model.teacher_features(batch)
        loss, logs = self._step_module(batch, states, features)
        raise_if_not_finite(loss, batch, self._setup.distributed)  # before any parameter changes
        lr = self._student.lr
        grad_norm = self._student.apply(loss)
        self.steps += 1
        return {
            "loss": float(loss.detach()),
            "lr": lr,
            "grad_norm": grad_norm,
            **logs_to_floats(logs),
            **{f"weight/{name}": model.weights[name] for name in self._ramped},
        }

    def state_dict(self) -> dict[str, Any]:
        if self._student is None:
            raise RuntimeError("call setup() before state_dict()")
        return {"student": self._student.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._student is None:
            raise RuntimeError("call setup() before load_state_dict()")
        self._student.load_state_dict(state["student"])
        self.steps = int(state["steps"])
