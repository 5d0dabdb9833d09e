"""Composing a run's components into a model: featurizer, teacher, encoder, tasks, scheme.

:func:`compose` builds every component of a :class:`~protsteps.runconfig.RunConfig` in the
order their contexts need (the featurizer's ``provides`` and the teacher's width before the
encoder, the encoder's width before the tasks), resolves the reserved names ``auto`` and
``none``, and returns a :class:`Composition`. The CLI's ``pretrain`` and the Python API go
through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .components import BuildContext, Encoder, EncoderOutput, Featurizer, PretextTask, TaskOutput, Teacher
from .errors import ComponentUnavailableError, CompositionError
from .graph import Batch
from .optim import NonFiniteLossError
from .registry import Catalog
from .runconfig import ComponentChoice, RunConfig

__all__ = [
    "AUTO_TEACHER",
    "Composition",
    "PretrainModel",
    "compose",
    "featurizer_context",
    "resolve_teacher",
]

#: the teacher tried for ``[teacher] name = "auto"``, with its default settings
AUTO_TEACHER = "esm"


class PretrainModel(nn.Module):
    """The trainable student (encoder and task heads) and the teacher that feeds it.

    The teacher is held outside the module tree: its frozen weights are not part of
    :meth:`state_dict` (they are large and come from their own file), and
    :meth:`student_parameters` are exactly what the optimiser updates.
    """

    def __init__(
        self,
        encoder: Encoder,
        tasks: Mapping[str, PretextTask],
        weights: Mapping[str, float],
        teacher: Teacher | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = nn.ModuleDict(dict(tasks))
        self.weights = dict(weights)
        self.__dict__["teacher"] = teacher  # not a submodule: see the class docstring

    teacher: Teacher | None

    def student_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def to(self, *args: Any, **kwargs: Any) -> PretrainModel:  # type: ignore[override]
        super().to(*args, **kwargs)
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return self

    def corrupt(self, batch: Batch, generator: torch.Generator | None) -> tuple[Batch, dict[str, Any]]:
        """Let each task corrupt the batch in turn; returns the batch the encoder sees and
        each task's state."""
        states: dict[str, Any] = {}
        for name, task in self.tasks.items():
            batch, states[name] = task.corrupt(batch, generator)  # type: ignore[operator]
        return batch, states

    def teacher_features(self, batch: Batch, tail: Mapping[str, Tensor] | None = None) -> Tensor | None:
        """[N, teacher_dim] features of the batch's residues, or ``None`` without a teacher."""
        if self.teacher is None:
            return None
        features = self.teacher(batch.sequences, tail=tail)
        if features.shape[0] != batch.num_nodes:
            raise RuntimeError(
                f"the teacher returned {features.shape[0]} residue embeddings for a batch of "
                f"{batch.num_nodes} residues"
            )
        return features

    def pretext_loss(
        self, batch: Batch, states: Mapping[str, Any], features: Tensor | None
    ) -> tuple[Tensor, EncoderOutput, dict[str, Tensor]]:
        """Encode and score every task: the weighted loss, the encoder output and a flat dict
        of logs (``<task>/loss`` and ``<task>/<metric>``)."""
        output = self.encoder(batch, features)
        total = output.node.new_zeros(())
        logs: dict[str, Tensor] = {}
        for name, task in self.tasks.items():
            try:
                result = task(batch, output, states.get(name))
            except NonFiniteLossError:
                if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                    raise
                # Under torchrun the other processes are already on their way into the step's
                # collectives: a NaN loss takes this one there too, and the all-process
                # finiteness check (raise_if_not_finite) then stops or skips every process at
                # the same step instead of this one alone.
                anchor = output.node if output.node is not None else output.graph
                nan = anchor.sum() * float("nan") if anchor is not None else torch.tensor(float("nan"))
                result = TaskOutput(loss=nan, metrics={})
            total = total + self.weights[name] * result.loss
            logs[f"{name}/loss"] = result.loss.detach()
            for key, value in result.metrics.items():
                logs[f"{name}/{key}"] = value.detach() if isinstance(value, Tensor) else torch.tensor(value)
        return total, output, logs

    def forward(
        self, batch: Batch, states: Mapping[str, Any], features: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        total, _, logs = self.pretext_loss(batch, states, features)
        return total, logs


@dataclasses.dataclass
class Composition:
    """Everything built from a run config. ``config`` is the resolved config (``auto``
    replaced by what it became), and ``notes`` says what was decided and why."""

    config: RunConfig
    featurizer: Featurizer
    model: PretrainModel
    scheme: Any
    notes: list[str]


def resolve_teacher(
    choice: ComponentChoice, catalog: Catalog
) -> tuple[Teacher | None, ComponentChoice, str | None]:
    """Build the teacher of ``choice``. ``auto`` becomes :data:`AUTO_TEACHER` with its
    default settings when it can be built here, else no teacher; the note says which."""
    if choice.name == "none":
        return None, choice, None
    if choice.name == "auto":
        if AUTO_TEACHER not in catalog.registry("teacher"):
            return (
                None,
                ComponentChoice("none"),
                f"teacher auto: no '{AUTO_TEACHER}' teacher installed; training without a teacher",
            )
        config = catalog.make_config("teacher", AUTO_TEACHER)
        try:
            teacher = catalog.build("teacher", AUTO_TEACHER, config=config)
        except ComponentUnavailableError as exc:
            return None, ComponentChoice("none"), f"teacher auto -> none: {exc}"
        return (
            teacher,
            ComponentChoice(AUTO_TEACHER, config),
            f"teacher auto -> {AUTO_TEACHER} ({_describe(config)})",
        )
    teacher = catalog.build("teacher", choice.name, config=choice.config)
    return teacher, choice, None


def _describe(config: Any) -> str:
    model = getattr(config, "model", None)
    return str(model) if model is not None else type(config).__name__


def _attribute_columns(
    featurizer: Any, attribute: str, provides: frozenset[str]
) -> tuple[str | None, int | None]:
    """The irreps and the width of ``edge_attr`` or ``node_attr`` as ``featurizer`` fills it:
    ``("", 0)`` when it fills none; the width from its ``<attribute>_dim`` when it has one,
    else the dimension of the irreps; ``None`` when unknown."""
    irreps = getattr(featurizer, f"{attribute}_irreps", None)
    width = getattr(featurizer, f"{attribute}_dim", None)
    if isinstance(width, bool) or not isinstance(width, int):
        width = None
    if width is None and irreps is not None:
        from e3nn import o3  # only here: importing e3nn takes a while

        try:
            width = o3.Irreps(irreps).dim
        except (ValueError, AssertionError) as exc:
            raise CompositionError(
                f"featurizer {type(featurizer).__name__}: {attribute}_irreps {irreps!r} is not an e3nn "
                f"irreps string ({exc})"
            ) from None
    if attribute not in provides and not width:
        return ("" if irreps is None else irreps), 0
    return irreps, width


def featurizer_context(name: str, featurizer: Featurizer, config: Any) -> BuildContext:
    """The :class:`BuildContext` that the featurizer ``name`` (built from ``config``) gives the
    components built after it: what it provides, its config, and the irreps and widths of
    ``edge_attr`` and ``node_attr``."""
    provides = frozenset(getattr(featurizer, "provides", frozenset()))
    edge_irreps, edge_dim = _attribute_columns(featurizer, "edge_attr", provides)
    node_irreps, node_dim = _attribute_columns(featurizer, "node_attr", provides)
    return BuildContext(
        provides=provides,
        featurizer=name,
        featurizer_config=config,
        edge_attr_irreps=edge_irreps,
        node_attr_irreps=node_irreps,
        edge_attr_dim=edge_dim,
        node_attr_dim=node_dim,
    )


def compose(config: RunConfig, catalog: Catalog, *, build_teacher: bool = True) -> Composition:
    """Build the featurizer, teacher, encoder, tasks and scheme of ``config``, in that order,
    each with a :class:`BuildContext` of what was built before it: the featurizer's
    :func:`featurizer_context` for all, ``teacher_dim`` from the teacher on, the encoder's
    ``encoder_dim``, name and ``structure_dim`` for tasks and scheme, and ``tasks`` (names to
    weights) for the scheme.

    Raises :class:`~protsteps.errors.CompositionError` when components cannot work together
    (missing batch attributes, a scheme that needs a teacher without one).
    """
    notes: list[str] = []
    featurizer = catalog.build("featurizer", config.featurizer.name, config=config.featurizer.config)
    featurized = featurizer_context(config.featurizer.name, featurizer, config.featurizer.config)
    teacher: Teacher | None = None
    teacher_choice = config.teacher
    if build_teacher:
        teacher, teacher_choice, note = resolve_teacher(config.teacher, catalog)
        if note:
            notes.append(note)
    teacher_dim = teacher.embed_dim if teacher is not None else None
    context = dataclasses.replace(featurized, teacher_dim=teacher_dim)
    encoder = catalog.build("encoder", config.encoder.name, config=config.encoder.config, context=context)
    task_context = dataclasses.replace(
        context,
        encoder_dim=encoder.out_dim,
        encoder=config.encoder.name,
        structure_dim=getattr(encoder, "structure_dim", None),
    )
    tasks = {
        t.name: catalog.build("task", t.name, config=t.config, context=task_context) for t in config.tasks
    }
    scheme_choice = config.scheme
    if scheme_choice.name == "auto":
        name = "pseudo_bilevel" if teacher is not None else "joint"
        if name not in catalog.registry("scheme"):
            raise CompositionError(f"scheme auto: the '{name}' scheme is not installed")
        scheme_choice = ComponentChoice(name, catalog.make_config("scheme", name))
        notes.append(f"scheme auto -> {name} ({'with' if teacher is not None else 'no'} teacher)")
    scheme_context = dataclasses.replace(task_context, tasks={t.name: t.weight for t in config.tasks})
    scheme = catalog.build("scheme", scheme_choice.name, config=scheme_choice.config, context=scheme_context)
    model = PretrainModel(encoder, tasks, {t.name: t.weight for t in config.tasks}, teacher)
    resolved = dataclasses.replace(config, teacher=teacher_choice, scheme=scheme_choice)
    return Composition(config=resolved, featurizer=featurizer, model=model, scheme=scheme, notes=notes)
