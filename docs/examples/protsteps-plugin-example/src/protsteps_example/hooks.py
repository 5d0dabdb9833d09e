"""The plugin's hooks: the module named by the ``protsteps`` entry point."""

from __future__ import annotations

from protsteps import Component, hookimpl

from .encoder import SequenceCNN, SequenceCNNConfig
from .scheme import TaskRampConfig, TaskRampScheme
from .task import ResidueTypeConfig, ResidueTypeTask


@hookimpl
def protsteps_register_encoders() -> list[Component]:
    return [
        Component(
            name="sequence_cnn",
            factory=SequenceCNN,
            config=SequenceCNNConfig,
            description="Residue-window convolution along the chain (sequence-only baseline).",
        )
    ]


@hookimpl
def protsteps_register_tasks() -> list[Component]:
    return [
        Component(
            name="residue_type",
            factory=ResidueTypeTask,
            config=ResidueTypeConfig,
            description="Masked residue-type prediction (cross-entropy over 20 amino acids).",
        )
    ]


@hookimpl
def protsteps_register_schemes() -> list[Component]:
    return [
        Component(
            name="task_ramp",
            factory=TaskRampScheme,
            config=TaskRampConfig,
            description="Joint training whose chosen tasks' weights rise linearly from 0 over ramp_steps.",
        )
    ]
