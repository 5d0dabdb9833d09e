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

The two views of :math:`L_{MI}`: :math:`s` is the mean of the teacher's residue embeddings
(it depends on :math:`\theta`); :math:`g` (``structure_view = "gnn"``, the paper) is the
mean of the encoder's message-passing output *before* any residual from its inputs
(:attr:`protsteps.EncoderOutput.structure`), computed from detached teacher features, so
that it carries structure and does not depend on :math:`\theta` at all: the inner gradient
reaches :math:`\theta` only through :math:`s`. ``structure_view = "embedding"`` uses the
protein embedding instead, which with an input residual contains :math:`s` itself (the
critic then compares the sequence view with a copy of it); it is kept for comparison.

Negatives: ``"in_batch"`` uses the other proteins of the batch (B >= 2; a batch of one
skips the look-ahead); ``"previous"`` appends the previous step's detached :math:`(s, g)`,
as the released code does at batch size 1 (the very first step of a run has none: with one
protein it skips the look-ahead and says so once).

The critic of :math:`L_{MI}` (:mod:`.mi`) is trained separately on detached embeddings with
its own optimiser and schedule, after the outer step, every ``critic_every`` steps on the
proteins seen since its last update (the released code: every second protein).

With ``anneal_inner_lr`` the inner rate follows the student's schedule,
:math:`\alpha_t = \alpha \cdot \mathrm{lr}_t / \mathrm{lr}`, as the released code's inner
SGD optimiser was annealed with the outer one.

With ``diagnostics = true``, every ``train.log_every`` steps the scheme also logs how much
the look-ahead matters at this operating point: ``lookahead/second_order``, the norm of the
second-order term over the norm of the full hypergradient; ``lookahead/cosine_joint``, the
cosine between the hypergradient and the gradient joint training with the teacher at
:math:`\theta` would take on the same batch; ``lookahead/tail_shift``,
:math:`\lVert\theta' - \theta\rVert / \lVert\theta\rVert`.

The inner and outer passes run inside one ``forward`` of :class:`BilevelObjective`, so the
student can be wrapped in ``DistributedDataParallel`` and backpropagated once per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from protsteps import Batch, BuildContext, EncoderOutput, Scheme, option
from protsteps.components import Need
from protsteps.config import check_ranges
from protsteps.errors import CompositionError
from protsteps.optim import (
    SchemeSetup,
    StudentOptimisation,
    all_processes,
    logs_to_floats,
    make_optimizer,
    mean_across_processes,
    raise_if_not_finite,
    schedule_factor,
)
from protsteps.precision import autocast_off
from protsteps.scatter import scatter_mean

from .mi import Critic, Projection, jensen_shannon_loss, silent_bound

#: consecutive critic updates after which a silent MI bound is reported (once per run)
SILENT_CRITIC_UPDATES = 20

StructureView = Literal["gnn", "embedding"]
Negatives = Literal["in_batch", "previous"]
#: detached (s, g) of some proteins: [P, teacher_dim], [P, structure_dim]
Views = tuple[Tensor, Tensor]


@dataclasses.dataclass
class PseudoBilevelConfig:
    inner_lr_factor: float = option(
        0.1, "Inner learning rate alpha = train.lr x this (the authors: 1e-3 x 0.1).", minimum=0
    )
    inner_lr: float | None = option(
        None, "Inner learning rate alpha itself; overrides inner_lr_factor.", minimum=0
    )
    anneal_inner_lr: bool = option(
        True,
        "Scale alpha by the student's learning-rate schedule (warm-up and decay), as the released "
        "code annealed its inner optimiser with the outer one.",
    )
    inner_steps: int = option(1, "Differentiable inner steps on the teacher's tail per batch.", minimum=1)
    second_order: bool = option(
        True, "Keep the second-order term (create_graph); false gives a first-order approximation."
    )
    structure_view: StructureView = option(
        "gnn",
        "The structure view g of the MI bound: gnn (the paper: mean of the encoder's message-passing "
        "output before the teacher residual, from detached teacher features) or embedding (the "
        "protein embedding, which contains the sequence view through the residual).",
    )
    negatives: Negatives = option(
        "in_batch",
        "Negatives of the MI bound: in_batch (other proteins of the batch, B >= 2) or previous "
        "(also the previous step's detached embeddings, as the released code at batch size 1).",
    )
    critic_projection: Projection = option(
        "residual_mlp",
        "The critic's projections: residual_mlp (ours) or paper (the released code's NodeEmb).",
    )
    critic_hidden_dim: int = option(
        256, "Hidden width of the critic's residual MLPs (residual_mlp only).", minimum=1
    )
    critic_dim: int = option(
        128,
        "Width of the critic's projections f_s(s), f_g(g); 0: the structure view's width (released code).",
        minimum=0,
    )
    critic_lr: float = option(
        1e-3, "Learning rate of the critic's own Adam optimiser (released code: 0.1).", exclusive_minimum=0
    )
    critic_schedule: Literal["constant", "cosine", "epoch_cosine"] = option(
        "constant", "The critic's learning-rate schedule (over training steps; epoch_cosine: per epoch)."
    )
    critic_every: int = option(
        1,
        "Update the critic every this many steps, on the proteins seen since its last update "
        "(released code: 2); it waits until it has seen at least 2 proteins.",
        minimum=1,
    )
    critic_steps: int = option(
        1, "Critic updates each time it is updated (on detached embeddings).", minimum=0
    )
    diagnostics: bool = option(
        False,
        "Every train.log_every steps, log the look-ahead's second-order share, its cosine with the "
        "joint gradient and the tail's shift (an extra forward and three backward passes).",
    )

    def __post_init__(self) -> None:
        check_ranges(self, "[scheme]")


def pseudo_bilevel_needs(config: PseudoBilevelConfig) -> list[Need]:
    """What the scheme needs of the composition under ``config``: a teacher with a trainable
    tail (the inner step updates it), the encoder's structure view under
    ``structure_view = "gnn"``, and batches of two proteins or more under
    ``negatives = "in_batch"`` (a protein alone has no negative for the MI bound)."""
    needs = [Need("teacher"), Need("teacher.tail")]
    if config.structure_view == "gnn":
        needs.append(Need("encoder.structure", 'or set scheme.structure_view = "embedding"'))
    if config.negatives == "in_batch":
        needs.append(Need("batch>=2", 'or set scheme.negatives = "previous"'))
    return needs


def sequence_embedding(features: Tensor, batch: Batch) -> Tensor:
    """s: [B, teacher_dim], the mean of each protein's teacher residue embeddings."""
    return scatter_mean(features, batch.batch, batch.num_graphs)


def structure_embedding(output: EncoderOutput, batch: Batch, view: StructureView) -> Tensor:
    """g: [B, d], the mean of ``output.structure`` (view ``gnn``) or ``output.graph``."""
    if view == "embedding":
        return output.graph
    if output.structure is None:
        raise RuntimeError(
            'structure_view = "gnn" needs EncoderOutput.structure, but the encoder returned None'
        )
    return scatter_mean(output.structure, batch.batch, batch.num_graphs)


def _with(views: Views, extra: Views | None) -> Views:
    if extra is None:
        return views
    return torch.cat([views[0], extra[0].to(views[0])]), torch.cat([views[1], extra[1].to(views[1])])


class BilevelObjective(nn.Module):
    """One step's computation, inner look-ahead included, as a module forward.

    ``forward(batch, states, negatives)`` returns the outer loss, the logs, and the detached
    sequence and structure views ``(s, g)`` of the batch's proteins at :math:`\theta` (for the
    critic and for the next step's negatives). ``negatives`` are detached views of other
    proteins added to the MI bound, or ``None``. :attr:`alpha` may change between steps.
    """

    def __init__(
        self,
        model: nn.Module,
        critic: Critic,
        alpha: float,
        inner_steps: int,
        second_order: bool,
        structure_view: StructureView = "gnn",
    ) -> None:
        super().__init__()
        self.model = model
        self.__dict__["critic"] = critic  # trained by its own optimiser, not through this module
        self.alpha = alpha
        self.inner_steps = inner_steps
        self.second_order = second_order
        self.structure_view: StructureView = structure_view

    critic: Critic

    def views(self, batch: Batch, features: Tensor) -> Views:
        """(s, g) from teacher features (g from detached ones under the ``gnn`` view)."""
        s = sequence_embedding(features, batch)
        encoder_input = features.detach() if self.structure_view == "gnn" else features
        g = structure_embedding(self.model.encoder(batch, encoder_input), batch, self.structure_view)
        return s, g

    def look_ahead(
        self, batch: Batch, negatives: Views | None = None
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """theta' after the inner steps, the first inner MI loss and the detached (s, g)."""
        teacher = self.model.teacher
        tail: dict[str, Tensor] = dict(teacher.tail_parameters())
        first: tuple[Tensor, Tensor, Tensor] | None = None
        g_fixed: Tensor | None = None
        for _ in range(self.inner_steps):
            features = teacher(batch.sequences, tail=tail)
            if g_fixed is None or self.structure_view != "gnn":
                s, g = self.views(batch, features)
                g_fixed = g
            else:  # g does not depend on theta: the same at every inner step
                s, g = sequence_embedding(features, batch), g_fixed
            mi = jensen_shannon_loss(self.critic(*_with((s, g), negatives)))
            grads = torch.autograd.grad(
                mi, list(tail.values()), create_graph=self.second_order, allow_unused=True
            )
            tail = {
                name: value if grad is None else value - self.alpha * grad
                for (name, value), grad in zip(tail.items(), grads, strict=True)
            }
            if first is None:
                first = (mi.detach(), s.detach(), g.detach())
        assert first is not None
        return tail, *first

    def forward(
        self, batch: Batch, states: Mapping[str, Any], negatives: Views | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        logs: dict[str, Tensor] = {}
        others = 0 if negatives is None else int(negatives[0].shape[0])
        if batch.num_graphs + others >= 2:
            tail, mi, s, g = self.look_ahead(batch, negatives)
            logs["mi"] = mi
            features = self.model.teacher_features(batch, tail=tail)
            loss, _, pretext_logs = self.model.pretext_loss(batch, states, features)
        else:
            # no negatives for the bound: theta' = theta for this batch (counted in the logs);
            # its views still serve as the next step's negatives and the critic's data
            logs["mi_skipped"] = torch.ones(())
            features = self.model.teacher_features(batch)
            loss, output, pretext_logs = self.model.pretext_loss(batch, states, features)
            s = sequence_embedding(features, batch).detach()
            # the same values as from detached features: only gradients differ
            g = structure_embedding(output, batch, self.structure_view).detach()
        logs.update(pretext_logs)
        return loss, logs, s, g


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


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
        if config.structure_view == "gnn":
            if context.structure_dim is None:
                encoder = f"encoder '{context.encoder}'" if context.encoder else "the encoder"
                raise CompositionError(
                    f"scheme 'pseudo_bilevel' with structure_view = \"gnn\" needs the encoder's "
                    f"message-passing output before the teacher residual (EncoderOutput.structure, "
                    f"Encoder.structure_dim), which {encoder} does not provide; use an encoder that "
                    f'does (gin, equivariant) or set scheme.structure_view = "embedding"'
                )
            structure_dim = context.structure_dim
        else:
            structure_dim = context.encoder_dim
        critic_dim = config.critic_dim or structure_dim
        if config.critic_projection == "paper" and critic_dim < max(context.teacher_dim, structure_dim):
            raise CompositionError(
                f"scheme 'pseudo_bilevel': critic_projection = \"paper\" widens both views to critic_dim, "
                f"which must be at least {max(context.teacher_dim, structure_dim)} (teacher width "
                f"{context.teacher_dim}, structure view width {structure_dim}); got {critic_dim}. "
                "Set scheme.critic_dim = 0 for the structure view's width"
            )
        self.config = config
        self.critic = Critic(
            context.teacher_dim, structure_dim, config.critic_hidden_dim, critic_dim, config.critic_projection
        )
        self._setup: SchemeSetup | None = None
        #: detached views of the last step's proteins (negatives = "previous")
        self._previous: Views | None = None
        #: detached views waiting for the critic's next update, and steps since its last one
        self._pending: list[Views] = []
        self._since_critic = 0
        self._steps = 0
        #: consecutive critic updates after which the MI bound passed no gradient to either view
        self._silent_updates = 0
        self._said: set[str] = set()

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
        self.alpha = (
            self.config.inner_lr
            if self.config.inner_lr is not None
            else setup.train.lr * self.config.inner_lr_factor
        )
        self.objective = BilevelObjective(
            model,
            self.critic,
            self.alpha,
            self.config.inner_steps,
            self.config.second_order,
            self.config.structure_view,
        )
        self.step_module = setup.wrap(self.objective)
        self.critic_optimizer = make_optimizer(self.critic.parameters(), self.config.critic_lr, 0.0)
        # a function of the training step (not of the critic's updates), set before each update
        self.critic_lr_factor = schedule_factor(
            self.config.critic_schedule, 0, setup.total_steps, setup.epoch_starts
        )

    def _check(self) -> SchemeSetup:
        if self._setup is None:
            raise RuntimeError("call setup() before using the scheme")
        return self._setup

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._check().notify(message)

    def _negatives(self) -> Views | None:
        return self._previous if self.config.negatives == "previous" else None

    def step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        setup = self._check()
        batch, states = setup.model.corrupt(batch, generator)
        if self.config.anneal_inner_lr:
            self.objective.alpha = self.alpha * self.student.lr_factor
        negatives = self._negatives()
        diagnostics: dict[str, float] = {}
        if self.config.diagnostics and self._steps % setup.train.log_every == 0:
            diagnostics = self.diagnose(batch, states, negatives)
        loss, logs, s, g = self.step_module(batch, states, negatives)
        raise_if_not_finite(loss, batch, setup.distributed)
        if "mi_skipped" in logs:
            self._say_once(
                "skipped",
                f"pseudo_bilevel: step {self._steps + 1} has one protein and no other to contrast it "
                "with, so the MI look-ahead is skipped on it (theta' = theta)"
                + (
                    ""
                    if self.config.negatives == "previous"
                    else '; negatives = "previous" pairs it with the previous step\'s'
                ),
            )
        lr = self.student.lr
        grad_norm = self.student.apply(loss)
        result = {
            "loss": float(loss.detach()),
            "lr": lr,
            "inner_lr": float(self.objective.alpha),
            "grad_norm": grad_norm,
            **logs_to_floats(logs),
            **diagnostics,
        }
        # kept for the critic and the next step's negatives, and saved in checkpoints: float32
        # even when the step ran under autocast ([train] precision)
        s, g = s.float(), g.float()
        self._previous = (s, g)
        self._pending.append((s, g))
        self._since_critic += 1
        critic_loss = self._maybe_train_critic()
        if critic_loss is not None:
            result["critic_loss"] = critic_loss
            result["critic_silent"] = float(self._silent_updates > 0)
        self._steps += 1
        return result

    def _maybe_train_critic(self) -> float | None:
        """Train the critic when ``critic_every`` steps have passed and it has seen at least 2
        proteins since its last update (in every process); returns its loss after the update."""
        setup = self._check()
        seen = sum(int(s.shape[0]) for s, _ in self._pending)
        ready = self._since_critic >= self.config.critic_every and seen >= 2
        if not all_processes(ready, setup.distributed, setup.device):
            return None
        s = torch.cat([s for s, _ in self._pending])
        g = torch.cat([g for _, g in self._pending])
        self._pending = []
        self._since_critic = 0
        return self._train_critic(s, g)

    def _train_critic(self, s: Tensor, g: Tensor) -> float:
        """``critic_steps`` updates of the critic on detached views; returns its loss after them.

        In float32 whatever ``[train] precision`` the step's forward runs at (the step runs
        under autocast): the critic's gradients get no loss scaling, which float16 would need,
        and whether the bound is silent (a gradient exactly 0) must not depend on underflow."""
        setup = self._check()
        for group in self.critic_optimizer.param_groups:
            group["lr"] = self.config.critic_lr * self.critic_lr_factor(self._steps)
        with autocast_off():
            for _ in range(self.config.critic_steps):
                self.critic_optimizer.zero_grad(set_to_none=True)
                critic_loss = jensen_shannon_loss(self.critic(s, g))
                critic_loss.backward()
                grads = [p.grad for p in self.critic.parameters() if p.grad is not None]
                mean_across_processes(grads, setup.distributed)
                self.critic_optimizer.step()
            loss, silent, zero = silent_bound(self.critic, s, g)
        self._watch_critic(silent, zero, loss)
        return loss

    def _watch_critic(self, silent: bool, zero: bool, loss: float) -> None:
        """Count the consecutive critic updates after which the MI bound passed no gradient to
        either view (:func:`.mi.silent_bound`) and say once per run when they reach
        :data:`SILENT_CRITIC_UPDATES`: the run then trains as joint training with the teacher,
        which a user would otherwise see only as a ``critic_loss`` that stopped moving."""
        self._silent_updates = self._silent_updates + 1 if silent else 0
        if silent and self._silent_updates >= SILENT_CRITIC_UPDATES:
            why = (
                "every pair scores 0, so L_MI is the constant 2 ln 2 = 1.386"
                if zero
                else f"L_MI = {loss:.4g} is flat in both views"
            )
            self._say_once(
                "silent critic",
                f"pseudo_bilevel: after each of the last {self._silent_updates} critic updates (step "
                f"{self._steps + 1}) the MI bound passed no gradient to the sequence or the structure "
                f"view: {why}. The look-ahead then leaves theta' = theta and the student trains as in "
                "joint training with the teacher, for as long as it lasts (logged as critic_silent). "
                "The released critic does this at its learning rate 0.1: its ReLU projections end up "
                "with no active unit common to both views (the paper preset; see docs/method.md). "
                'A lower scheme.critic_lr, or scheme.critic_projection = "residual_mlp", keeps it alive',
            )

    def diagnose(
        self, batch: Batch, states: Mapping[str, Any], negatives: Views | None = None
    ) -> dict[str, float]:
        r"""How much the look-ahead changes the student's gradient on this (corrupted) batch,
        without stepping anything; empty when the batch has no negatives for the bound.

        ``lookahead/second_order``: :math:`\lVert d L/d\phi - \partial L/\partial\phi\rVert /
        \lVert dL/d\phi\rVert` with :math:`L = L_{pre}(\phi, \theta'(\phi))` (the partial
        holds :math:`\theta'` fixed); ``lookahead/cosine_joint``: cosine between
        :math:`dL/d\phi` and the joint gradient :math:`\partial L_{pre}(\phi, \theta)/\partial\phi`;
        ``lookahead/tail_shift``: :math:`\lVert\theta' - \theta\rVert / \lVert\theta\rVert`.
        """
        setup = self._check()
        model = setup.model
        others = 0 if negatives is None else int(negatives[0].shape[0])
        if batch.num_graphs + others < 2:
            return {}
        params = self.student.params

        def gradient(loss: Tensor) -> Tensor:
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return _flat(
                [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            )

        tail, _, _, _ = self.objective.look_ahead(batch, negatives)
        ahead = model.teacher_features(batch, tail=tail)
        full = gradient(model(batch, states, ahead)[0])
        partial = gradient(model(batch, states, ahead.detach())[0])
        with torch.no_grad():
            at_theta = model.teacher_features(batch)
        joint = gradient(model(batch, states, at_theta)[0])
        theta = model.teacher.tail_parameters()
        shift = _flat([(tail[k] - v).detach() for k, v in theta.items()]).norm()
        eps = torch.finfo(full.dtype).tiny
        return {
            "lookahead/second_order": float((full - partial).norm() / full.norm().clamp_min(eps)),
            "lookahead/cosine_joint": float(
                torch.dot(full, joint) / (full.norm() * joint.norm()).clamp_min(eps)
            ),
            "lookahead/tail_shift": float(shift / _flat(list(theta.values())).detach().norm().clamp_min(eps)),
        }

    def hypergradient(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """The outer loss and its gradient with respect to the student's parameters, without
        stepping anything (for tests and analysis)."""
        setup = self._check()
        batch, states = setup.model.corrupt(batch, generator)
        loss, _, _, _ = self.objective(batch, states, self._negatives())
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
            "previous": None if self._previous is None else list(self._previous),
            "pending": [list(views) for views in self._pending],
            "since_critic": self._since_critic,
            "steps": self._steps,
            "silent_critic_updates": self._silent_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        setup = self._check()
        self.student.load_state_dict(state["student"])
        self.critic.load_state_dict(state["critic"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])

        def views(pair: Any) -> Views:
            s, g = pair
            return s.to(setup.device), g.to(setup.device)

        previous = state.get("previous")
        self._previous = None if previous is None else views(previous)
        self._pending = [views(pair) for pair in state.get("pending", [])]
        self._since_critic = int(state.get("since_critic", 0))
        self._steps = int(state.get("steps", 0))
        self._silent_updates = int(state.get("silent_critic_updates", 0))
