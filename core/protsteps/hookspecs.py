"""The hooks a protsteps plugin implements: one per kind of component.

A plugin is a module (or object) with functions marked ``@protsteps.hookimpl`` and named
after these specs, exposed through an entry point in the group ``protsteps``::

    # pyproject.toml of a plugin package
    [project.entry-points.protsteps]
    my_plugin = "my_package.hooks"

Each component hook takes no arguments and returns a list of :class:`protsteps.Component`.
protsteps records which plugin returned which component, so that a duplicate name can be
reported with both plugins' names. The built-in plugins are registered exactly this way.
``protsteps_register_presets`` returns named run files (:class:`protsteps.Preset`) the same
way, and the six extension hooks below (heads, label formats, metrics, embeddings writers,
training callbacks, CLI commands) return the records of :mod:`protsteps.extensions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .components import Component
    from .extensions import Callback, Command, EmbeddingsWriter, Head, LabelFormat, Metric
    from .presets import Preset

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "protsteps"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def protsteps_register_featurizers() -> list[Component]:  # type: ignore[empty-body]
    """Featurizers: parsed chain -> :class:`protsteps.ProteinGraph`.

    Factories receive ``(config, context)`` and return a :class:`protsteps.Featurizer`.
    """


@hookspec
def protsteps_register_encoders() -> list[Component]:  # type: ignore[empty-body]
    """Encoders: :class:`protsteps.Batch` (+ teacher features) -> embeddings.

    Factories receive ``(config, context)`` (``context.teacher_dim`` is the width of the
    teacher features, or ``None`` without a teacher) and return a :class:`protsteps.Encoder`.
    """


@hookspec
def protsteps_register_tasks() -> list[Component]:  # type: ignore[empty-body]
    """Pretext tasks: a head and a loss on the encoder's output.

    Factories receive ``(config, context)`` (``context.encoder_dim`` is the embedding width)
    and return a :class:`protsteps.PretextTask`.
    """


@hookspec
def protsteps_register_teachers() -> list[Component]:  # type: ignore[empty-body]
    """Teachers: sequences -> per-residue embeddings, with a trainable tail.

    Factories receive ``(config, context)`` and return a :class:`protsteps.Teacher`; a
    factory raises :class:`protsteps.errors.ComponentUnavailableError` when it cannot be
    built on this machine (weights missing, say).
    """


@hookspec
def protsteps_register_schemes() -> list[Component]:  # type: ignore[empty-body]
    """Optimisation schemes: one step over a batch.

    Factories receive ``(config, context)`` and return a :class:`protsteps.Scheme`.
    """


@hookspec
def protsteps_register_presets() -> list[Preset]:  # type: ignore[empty-body]
    """Presets: named run files for ``protsteps pretrain --preset NAME``.

    Returns :class:`protsteps.Preset` records (name, one-line description, TOML text). A name
    two plugins register is refused with an error naming both, like a component name.
    """


@hookspec
def protsteps_register_heads() -> list[Head]:  # type: ignore[empty-body]
    """Finetune heads, selected with ``finetune --head NAME`` (``[finetune] head``).

    Returns :class:`protsteps.extensions.Head` records: ``factory(HeadContext)`` gives a
    module mapping protein embeddings ``[B, d]`` to logits ``[B, C]``.
    """


@hookspec
def protsteps_register_label_formats() -> list[LabelFormat]:  # type: ignore[empty-body]
    """Label/dataset formats, selected with ``finetune --format NAME``.

    Returns :class:`protsteps.extensions.LabelFormat` records: ``read(path, LabelOptions)``
    gives a :class:`protsteps.downstream.LabelledSet`.
    """


@hookspec
def protsteps_register_metrics() -> list[Metric]:  # type: ignore[empty-body]
    """Finetune metrics: every one that scores the task is reported for the validation and
    test sets; ``finetune --metric NAME`` picks the best epoch by one.

    Returns :class:`protsteps.extensions.Metric` records.
    """


@hookspec
def protsteps_register_embeddings_writers() -> list[EmbeddingsWriter]:  # type: ignore[empty-body]
    """Embeddings file formats, selected with ``embed --format NAME`` or by ``--out``'s suffix.

    Returns :class:`protsteps.extensions.EmbeddingsWriter` records.
    """


@hookspec
def protsteps_register_callbacks() -> list[Callback]:  # type: ignore[empty-body]
    """Training callbacks and loggers, selected by name in ``[train] callbacks``.

    Returns :class:`protsteps.extensions.Callback` records: ``factory(CallbackContext)``
    gives a :class:`protsteps.extensions.TrainingCallback`.
    """


@hookspec
def protsteps_register_commands() -> list[Command]:  # type: ignore[empty-body]
    """CLI commands: each :class:`protsteps.extensions.Command` mounts a ``typer.Typer`` app
    as ``protsteps NAME``.
    """
