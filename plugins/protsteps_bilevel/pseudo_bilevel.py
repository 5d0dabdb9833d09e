r"""STEPS' pseudo bi-level optimisation, with ``torch.func``.

:math:`\theta` is the teacher's trainable tail, :math:`\phi` the student (encoder and task
heads). For each batch:

1. Inner step, differentiable (``create_graph=True``):
   :math:`\theta' = \theta - \alpha \nabla_\theta L_{MI}(\theta, \phi)`, repeated
   ``inner_steps`` times, with :math:`\alpha` = ``train.lr`` x ``inner_lr_factor``
   (the authors: 1e-3 x 0.1) unless ``inner_lr`` is set.
2. Outer step: the teacher is evaluated with :math:`\theta'` through
   ``torch.func.functional_call``, the student encodes and the tasks score:
   :math:`L_{pre}(\phi, \theta'(\phi))`. Adam steps :math:`\phi` on the full gradient,

   .. math::

       \frac{d L_{pre}}{d\phi} = \frac{\partial L_{pre}}{\partial \phi}
         - \alpha \left(\frac{\partial^2 L_{MI}}{\partial\phi\,\partial\theta}\right)^{\!\top}
           \frac{\partial L_{pre}}{\partial \theta'},

   whose second term is how the sequence view shapes the structure encoder.
3. :math:`\theta'` is discarded: the teacher's stored weights never change ("pseudo": one
   look-ahead step, not a solved inner problem).

The critic of :math:`L_{MI}` (:mod:`.mi`) is trained separately on detached embeddings with
its own optimiser and schedule, after the outer step.

The inner and outer passes run inside one ``forward`` of :class:`BilevelObjective`, so the
student can be wrapped in ``DistributedDataParallel`` and backpropagated once per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from protsteps import Batch, BuildContext, Scheme, option
from protsteps.errors import CompositionError
from protsteps.optim import (
    NonFiniteLossError,
    SchemeSetup,
    all_finite,
    make_optimizer,
    make_scheduler,
    mean_across_processes,
)
from protsteps.scatter import scatter_mean

from .joint import StudentOptimisation, describe_batch, logs_to_floats
from .mi import Critic, jensen_shannon_loss


@dataclasses.dataclass
class PseudoBilevelConfig:
    inner_lr_factor: float = option(
        0.1, "Inner learning rate alpha = train.lr x this (the authors: 1e-3 x 0.1)."
    )
    inner_lr: float | None = option(None, "Inner learning rate alpha itself; overrides inner_lr_factor.")
    inner_steps: int = option(1, "Differentiable inner steps on the teacher's tail per batch.")
    second_order: bool = option(
        True, "Keep the second-order term (create_graph); false gives a first-order approximation."
    )
    critic_hidden_dim: int = option(256, "Hidden width of the critic's two residual MLPs.")
    critic_dim: int = option(128, "Width of the critic's projections f_s(s), f_g(g).")
    critic_lr: float = option(1e-3, "Learning rate of the critic's own Adam optimiser.")
    critic_schedule: Literal["constant", "cosine"] = option(
        "constant", "The critic's learning-rate schedule."
    )
    critic_steps: int = option(1, "Critic updates per batch (on detached embeddings).")

    def __post_init__(self) -> None:
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}")
        if self.critic_steps < 0:
            raise ValueError(f"critic_steps must be >= 0, got {self.critic_steps}")


def sequence_embedding(features: Tensor, batch: Batch) -> Tensor:
    """s: [B, teacher_dim], the mean of each protein's teacher residue embeddings."""
    return scatter_mean(features, batch.batch, batch.num_graphs)


class BilevelObjective(nn.Module):
    """One step's computation, inner look-ahead included, as a module forward.

    ``forward(batch, states)`` returns the outer loss, the logs, and the detached sequence
    and structure embeddings of the inner pass (for the critic's update).
    """

    def __init__(
        self, model: nn.Module, critic: Critic, alpha: float, inner_steps: int, second_order: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.__dict__["critic"] = critic  # trained by its own optimiser, not through this module
        self.alpha = alpha
        self.inner_steps = inner_steps
        self.second_order = second_order

    critic: Critic

    def look_ahead(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """theta' after the inner steps, the first inner MI loss and the detached (s, g)."""
        teacher = self.model.teacher
        tail: dict[str, Tensor] = dict(teacher.tail_parameters())
        first_mi = None
        s0 = g0 = None
        for _ in range(self.inner_steps):
            features = teacher(batch.sequences, tail=tail)
            s = sequence_embedding(features, batch)
            g = self.model.encoder(batch, features).graph
            mi = jensen_shannon_loss(self.critic(s, g))
            grads = torch.autograd.grad(
                mi, list(tail.values()), create_graph=self.second_order, allow_unused=True
            )
            tail = {
                name: value if grad is None else value - self.alpha * grad
                for (name, value), grad in zip(tail.items(), grads, strict=True)
            }
            if first_mi is None:
                first_mi, s0, g0 = mi.detach(), s.detach(), g.detach()
        assert first_mi is not None and s0 is not None and g0 is not None
        return tail, first_mi, s0, g0

    def forward(
        self, batch: Batch, states: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None, Tensor | None]:
        logs: dict[str, Tensor] = {}
        s = g = None
        if batch.num_graphs >= 2:
            tail, mi, s, g = self.look_ahead(batch)
            logs["mi"] = mi
        else:
            # no negatives for the bound: theta' = theta for this batch (counted in the logs)
            tail = None
            logs["mi_skipped"] = torch.ones(())
        features = self.model.teacher_features(batch, tail=tail)
        loss, pretext_logs = self.model(batch, states, features)
        logs.update(pretext_logs)
        return loss, logs, s, g


class PseudoBilevelScheme(Scheme):
    """STEPS' pseudo bi-level optimisation; see the module docstring."""

    def __init__(self, config: PseudoBilevelConfig, context: BuildContext) -> None:
        if context.teacher_dim is None:
            raise CompositionError(
                "scheme 'pseudo_bilevel' needs a teacher (its inner step updates the teacher's tail); "
                "name one with --teacher, or use --scheme joint"
            )
        if context.encoder_dim is None:
            raise CompositionError("scheme 'pseudo_bilevel' needs the encoder's width (context.encoder_dim)")
        self.config = config
        self.critic = Critic(
            context.teacher_dim, context.encoder_dim, config.critic_hidden_dim, config.critic_dim
        )
        self._setup: SchemeSetup | None = None

    def setup(self, setup: SchemeSetup) -> None:
        model = setup.model
        if model.teacher is None:
            raise CompositionError("scheme 'pseudo_bilevel' needs a teacher; use --scheme joint without one")
        if not model.teacher.tail_parameters():
            raise CompositionError(
                "scheme 'pseudo_bilevel' needs a teacher with a trainable tail (trainable_layers >= 1)"
            )
        self._setup = setup
        dtype = next(iter(model.parameters())).dtype
        self.critic.to(device=setup.device, dtype=dtype)
        self.student = StudentOptimisation(setup)
        alpha = (
            self.config.inner_lr
            if self.config.inner_lr is not None
            else setup.train.lr * self.config.inner_lr_factor
        )
        self.alpha = alpha
        self.objective = BilevelObjective(
            model, self.critic, alpha, self.config.inner_steps, self.config.second_order
        )
        self.step_module = setup.wrap(self.objective)
        self.critic_optimizer = make_optimizer(self.critic.parameters(), self.config.critic_lr, 0.0)
        self.critic_scheduler = make_scheduler(
            self.critic_optimizer,
            self.config.critic_schedule,
            0,
            setup.total_steps * max(self.config.critic_steps, 1),
        )

    def _check(self) -> SchemeSetup:
        if self._setup is None:
            raise RuntimeError("call setup() before using the scheme")
        return self._setup

    def step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        setup = self._check()
        batch, states = setup.model.corrupt(batch, generator)
        loss, logs, s, g = self.step_module(batch, states)
        finite = all_finite(loss.detach(), setup.distributed)
        if not finite:
            raise NonFiniteLossError(
                f"non-finite loss {float(loss.detach())} on batch of {describe_batch(batch)}"
            )
        lr = self.student.lr
        grad_norm = self.student.apply(loss)
        result = {"loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm, **logs_to_floats(logs)}
        if s is not None and g is not None:
            result["critic_loss"] = self._train_critic(s, g)
        return result

    def _train_critic(self, s: Tensor, g: Tensor) -> float:
        """``critic_steps`` updates of the critic on the step's pair; returns its loss after
        them (before them it is the step's ``mi``)."""
        setup = self._check()
        for _ in range(self.config.critic_steps):
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss = jensen_shannon_loss(self.critic(s, g))
            critic_loss.backward()
            grads = [p.grad for p in self.critic.parameters() if p.grad is not None]
            mean_across_processes(grads, setup.distributed)
            self.critic_optimizer.step()
            self.critic_scheduler.step()
        with torch.no_grad():
            return float(jensen_shannon_loss(self.critic(s, g)))

    def hypergradient(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """The outer loss and its gradient with respect to the student's parameters, without
        stepping anything (for tests and analysis)."""
        setup = self._check()
        batch, states = setup.model.corrupt(batch, generator)
        loss, _, _, _ = self.objective(batch, states)
        params = setup.model.student_parameters()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss.detach(), [
            torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        self._check()
        return {
            "student": self.student.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "critic_scheduler": self.critic_scheduler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check()
        self.student.load_state_dict(state["student"])
        self.critic.load_state_dict(state["critic"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.critic_scheduler.load_state_dict(state["critic_scheduler"])
