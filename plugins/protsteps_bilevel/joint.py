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
from torch import nn

from protsteps import Batch, BuildContext, Scheme
from protsteps.optim import (
    SchemeSetup,
    StudentOptimisation,
    describe_batch,
    logs_to_floats,
    raise_if_not_finite,
)

# importable from here too, as before they moved into protsteps.optim
__all__ = ["JointConfig", "JointScheme", "StudentOptimisation", "describe_batch", "logs_to_floats"]


@dataclasses.dataclass
class JointConfig:
    """The joint scheme has no settings of its own: learning rate, schedule and clipping
    are in ``[train]``."""


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
        raise_if_not_finite(loss, batch, self._setup.distributed)
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
