"""Composing a run's components into a model: featurizer, teacher, encoder, tasks, scheme.

:func:`compose` builds every component of a :class:`~protsteps.runconfig.RunConfig` in the
order their contexts need (the featurizer's ``provides`` and the teacher's width before the
encoder, the encoder's width before the tasks), resolves the reserved names ``auto`` and
``none``, and returns a :class:`Composition`. The CLI's ``pretrain`` and the Python API go
through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .capabilities import (
    Part,
    as_need,
    built_capabilities,
    check_needs,
    declared_capabilities,
    declared_needs,
    unmet,
)
from .components import BuildContext, Encoder, EncoderOutput, Featurizer, PretextTask, TaskOutput, Teacher
from .errors import ComponentUnavailableError, CompositionError
from .graph import Batch
from .optim import NonFiniteLossError
from .registry import Catalog, Entry
from .runconfig import ComponentChoice, RunConfig
from .teachers import tensor_fingerprint

__all__ = [
    "Composition",
    "PretrainModel",
    "auto_candidates",
    "compose",
    "featurizer_context",
    "resolve_scheme",
    "resolve_teacher",
    "teacher_state",
    "teacher_state_fingerprint",
]


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
        #: fingerprint of a ``stateless`` teacher's state as built (``encoder.pt`` then leaves
        #: the state out while it is unchanged); ``None`` otherwise
        self.teacher_fingerprint: str | None = (
            teacher_state_fingerprint(teacher_state(teacher))
            if teacher is not None and getattr(teacher, "stateless", False)
            else None
        )

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
        total = output.graph.new_zeros(()) if output.node is None else output.node.new_zeros(())
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


def teacher_state(teacher: Teacher) -> dict[str, Tensor]:
    """The teacher's ``state_dict``, detached, on the CPU (its trainable tail for a
    :class:`~protsteps.teachers.TrunkTailTeacher`)."""
    return {k: v.detach().cpu() for k, v in teacher.state_dict().items()}


def teacher_state_fingerprint(state: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of a teacher state: names, dtypes, shapes and bytes, in name order."""
    return tensor_fingerprint("teacher state", sorted(state.items()))


@dataclasses.dataclass
class Composition:
    """Everything built from a run config. ``config`` is the resolved config (``auto``
    replaced by what it became), and ``notes`` says what was decided and why."""

    config: RunConfig
    featurizer: Featurizer
    model: PretrainModel
    scheme: Any
    notes: list[str]


def _part(entry: Entry, config: Any, built: Any = None) -> Part:
    """``entry`` under ``config`` as a :class:`Part`: its declared capabilities (or, once
    built, what the built component offers) and its needs (declared, plus the built
    component's ``needs`` attribute)."""
    declared = declared_capabilities(entry, config)
    capabilities = declared if built is None else built_capabilities(entry.kind, built, declared)
    needs = declared_needs(entry, config)
    extra = getattr(built, "needs", None) if built is not None else None
    if extra is not None and not callable(extra) and not isinstance(extra, str):
        needs = needs + tuple(as_need(item, f"{entry.kind} '{entry.name}'") for item in extra)
    return Part(entry.kind, entry.name, entry.plugin, capabilities, needs)


def auto_candidates(kind: str, catalog: Catalog) -> list[Entry]:
    """The ``kind`` components that take part in ``name = "auto"``, in the order they are
    tried: by their declared ``auto`` place (lower first), then by name."""
    return sorted(
        (entry for entry in catalog.entries(kind) if entry.auto is not None),
        key=lambda entry: (entry.auto, entry.name),
    )


def resolve_teacher(
    choice: ComponentChoice,
    catalog: Catalog,
    others: Sequence[Part] = (),
    batch_size: int | None = None,
) -> tuple[Teacher | None, ComponentChoice, str | None]:
    """Build the teacher of ``choice``. ``auto`` tries the teachers that take part in it
    (:func:`auto_candidates`: the built-in ``esm`` first), each with its default settings,
    passing over those whose declared capabilities miss what ``others`` need of the teacher
    and those that cannot be built here (:class:`~protsteps.errors.ComponentUnavailableError`);
    none left: no teacher. The note says which and why."""
    if choice.name == "none":
        return None, choice, None
    if choice.name != "auto":
        return catalog.build("teacher", choice.name, config=choice.config), choice, None
    candidates = auto_candidates("teacher", catalog)
    if not candidates:
        return (
            None,
            ComponentChoice("none"),
            "teacher auto: no installed teacher takes part in auto; training without a teacher",
        )
    passed: list[str] = []
    for entry in candidates:
        config = catalog.make_config("teacher", entry.name)
        part = _part(entry, config)
        reasons = [
            reason
            for needer in others
            for need in needer.needs
            if need.what.startswith("teacher")
            and (reason := unmet(need, needer, [part], batch_size=batch_size)) is not None
        ]
        if reasons:
            passed.append(f"{entry.name}: {reasons[0]}")
            continue
        try:
            teacher = catalog.build("teacher", entry.name, config=config)
        except ComponentUnavailableError as exc:
            passed.append(f"{entry.name}: {exc}" if len(candidates) > 1 else str(exc))
            continue
        skipped = f"; passed over {'; '.join(passed)}" if passed else ""
        return (
            teacher,
            ComponentChoice(entry.name, config),
            f"teacher auto -> {entry.name} ({_describe(config)}){skipped}",
        )
    return None, ComponentChoice("none"), f"teacher auto -> none: {'; '.join(passed)}"


def resolve_scheme(
    choice: ComponentChoice, catalog: Catalog, parts: Sequence[Part], batch_size: int | None
) -> tuple[ComponentChoice, str | None]:
    """``auto`` becomes the first scheme of :func:`auto_candidates` (``pseudo_bilevel``, then
    ``joint``) whose needs the composed ``parts`` meet, with its default settings."""
    if choice.name != "auto":
        return choice, None
    candidates = auto_candidates("scheme", catalog)
    passed: list[str] = []
    for entry in candidates:
        config = catalog.make_config("scheme", entry.name)
        part = _part(entry, config)
        reasons = [
            reason
            for need in part.needs
            if (reason := unmet(need, part, parts, batch_size=batch_size)) is not None
        ]
        if reasons:
            passed.append(reasons[0])
            continue
        teacher = any(p.kind == "teacher" for p in parts)
        why = f"passed over: {'; '.join(passed)}" if passed else ("with teacher" if teacher else "no teacher")
        return ComponentChoice(entry.name, config), f"scheme auto -> {entry.name} ({why})"
    listed = "; ".join(passed) if passed else "no installed scheme takes part in auto"
    raise CompositionError(f"scheme auto: no scheme fits this composition ({listed}); name one with --scheme")


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

    Every component's needs (:mod:`protsteps.capabilities`) are checked first against the
    capabilities the others declare, before any component is built (so before weights are
    loaded, anything is featurized or a file is written), and again once each is built,
    against what the built components offer. ``auto`` choices use them
    (:func:`resolve_teacher`, :func:`resolve_scheme`).

    Raises :class:`~protsteps.errors.CompositionError` when components cannot work together
    (missing batch attributes or capabilities, a scheme that needs a teacher without one),
    naming both components and what is missing.
    """
    notes: list[str] = []
    batch_size = config.train.batch_size if config.train.max_residues == 0 else None
    entry = {kind: catalog.get(kind, getattr(config, kind).name) for kind in ("featurizer", "encoder")}
    task_entries = {t.name: catalog.get("task", t.name) for t in config.tasks}
    named_teacher = config.teacher.name not in ("auto", "none")
    teacher_entry = catalog.get("teacher", config.teacher.name) if named_teacher else None
    scheme_entry = catalog.get("scheme", config.scheme.name) if config.scheme.name != "auto" else None

    # 1. declared capabilities and needs, before anything is built
    static = [
        _part(entry["featurizer"], config.featurizer.config),
        _part(entry["encoder"], config.encoder.config),
        *(_part(task_entries[t.name], t.config) for t in config.tasks),
    ]
    if teacher_entry is not None:
        static.append(_part(teacher_entry, config.teacher.config))
    if scheme_entry is not None:
        static.append(_part(scheme_entry, config.scheme.config))
    teacher_unknown = config.teacher.name == "auto" or not build_teacher
    check_needs(
        [_without_teacher_needs(p) for p in static] if teacher_unknown else static, batch_size=batch_size
    )

    # 2. build, checking again with what each built component offers
    featurizer = catalog.build("featurizer", config.featurizer.name, config=config.featurizer.config)
    featurized = featurizer_context(config.featurizer.name, featurizer, config.featurizer.config)
    teacher: Teacher | None = None
    teacher_choice = config.teacher
    teacher_note = ""
    if build_teacher:
        teacher, teacher_choice, note = resolve_teacher(
            config.teacher, catalog, [p for p in static if p.kind != "teacher"], batch_size
        )
        if note:
            notes.append(note)
            teacher_note = note
    teacher_parts = []
    if teacher is not None:
        teacher_parts = [_part(catalog.get("teacher", teacher_choice.name), teacher_choice.config, teacher)]
    teacher_dim = teacher.embed_dim if teacher is not None else None
    context = dataclasses.replace(featurized, teacher_dim=teacher_dim)
    encoder = catalog.build("encoder", config.encoder.name, config=config.encoder.config, context=context)
    built = [
        _part(entry["featurizer"], config.featurizer.config, featurizer),
        *teacher_parts,
        _part(entry["encoder"], config.encoder.config, encoder),
    ]
    check_needs(built + static[2 : 2 + len(config.tasks)], batch_size=batch_size, teacher_note=teacher_note)
    task_context = dataclasses.replace(
        context,
        encoder_dim=encoder.out_dim,
        encoder=config.encoder.name,
        structure_dim=getattr(encoder, "structure_dim", None),
    )
    tasks = {
        t.name: catalog.build("task", t.name, config=t.config, context=task_context) for t in config.tasks
    }
    built += [_part(task_entries[t.name], t.config, tasks[t.name]) for t in config.tasks]
    check_needs(built, batch_size=batch_size, teacher_note=teacher_note)
    scheme_choice, note = resolve_scheme(config.scheme, catalog, built, batch_size)
    if note:
        notes.append(note)
    scheme_entry = catalog.get("scheme", scheme_choice.name)
    check_needs(
        [*built, _part(scheme_entry, scheme_choice.config)], batch_size=batch_size, teacher_note=teacher_note
    )
    scheme_context = dataclasses.replace(task_context, tasks={t.name: t.weight for t in config.tasks})
    scheme = catalog.build("scheme", scheme_choice.name, config=scheme_choice.config, context=scheme_context)
    check_needs(
        [*built, _part(scheme_entry, scheme_choice.config, scheme)],
        batch_size=batch_size,
        teacher_note=teacher_note,
    )
    model = PretrainModel(encoder, tasks, {t.name: t.weight for t in config.tasks}, teacher)
    resolved = dataclasses.replace(config, teacher=teacher_choice, scheme=scheme_choice)
    return Composition(config=resolved, featurizer=featurizer, model=model, scheme=scheme, notes=notes)


def _without_teacher_needs(part: Part) -> Part:
    """``part`` without its needs of the teacher (checked once ``auto`` is resolved)."""
    return dataclasses.replace(part, needs=tuple(n for n in part.needs if not n.what.startswith("teacher")))
