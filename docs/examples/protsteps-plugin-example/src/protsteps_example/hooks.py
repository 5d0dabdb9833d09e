"""The plugin's hooks: the module named by the ``protsteps`` entry point."""

from __future__ import annotations

from protsteps import Component, hookimpl
from protsteps.extensions import Callback, Command, EmbeddingsWriter, Head, LabelFormat, Metric

from .command import sequences_app
from .downstream import CosineHead, balanced_accuracy, read_class_folders, write_tsv
from .encoder import SequenceCNN, SequenceCNNConfig
from .loss_summary import LossSummary
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
            # what its EncoderOutput holds: node and graph, no structure view, no vectors
            capabilities=["per_residue", "per_protein"],
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
            capabilities=[],
            needs=["encoder.per_residue"],  # it classifies each masked residue's embedding
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
            capabilities=[],
        )
    ]


@hookimpl
def protsteps_register_heads() -> list[Head]:
    return [Head("cosine", CosineHead, "Scaled cosine similarity to a learned prototype per class.")]


@hookimpl
def protsteps_register_label_formats() -> list[LabelFormat]:
    return [
        LabelFormat(
            "class_folders",
            read_class_folders,
            "A folder per class (optionally inside train/valid/test folders) holding its structure files.",
            options=(),  # the layout says everything: any label option given is refused
        )
    ]


@hookimpl
def protsteps_register_metrics() -> list[Metric]:
    return [Metric("balanced_accuracy", balanced_accuracy, "single", "Mean recall over the true classes.")]


@hookimpl
def protsteps_register_embeddings_writers() -> list[EmbeddingsWriter]:
    return [
        EmbeddingsWriter("tsv", write_tsv, ".tsv", "Tab-separated text: source, chain, residues, e0..e(d-1).")
    ]


@hookimpl
def protsteps_register_callbacks() -> list[Callback]:
    return [
        Callback("loss_summary", LossSummary, "RUNDIR/loss_summary.json: last train and best valid loss.")
    ]


@hookimpl
def protsteps_register_commands() -> list[Command]:
    return [Command("sequences", sequences_app, "Print the chains of structure files as FASTA.")]
