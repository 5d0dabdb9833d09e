"""Hooks of the built-in plugin ``downstream`` (entry point in protsteps' pyproject.toml)."""

from __future__ import annotations

from protsteps import hookimpl
from protsteps.extensions import Command, EmbeddingsWriter, Head, LabelFormat, Metric


@hookimpl
def protsteps_register_heads() -> list[Head]:
    from protsteps.downstream import _model

    return [
        Head(
            "mlp",
            _model.mlp_head,
            "LayerNorm, Linear(d, head_hidden), ReLU, Dropout, Linear (head_hidden 0: linear).",
        ),
        Head(
            "linear",
            _model.linear_head,
            "LayerNorm, Dropout, Linear(d, C): a linear probe whatever head_hidden says.",
        ),
    ]


@hookimpl
def protsteps_register_label_formats() -> list[LabelFormat]:
    from protsteps.downstream import _adapters

    return [
        LabelFormat(
            "manifest",
            _adapters.manifest_format,
            "CSV/TSV of structure paths (path:CHAIN) with label, split and group columns.",
            options=("label_column", "split_column", "group_column", "label_separator"),
        ),
        LabelFormat(
            "protfunct",
            _adapters.protfunct_format,
            "IEConv's ProtFunct folder (chain_functions.txt, splits); structures found by PDB id and chain.",
            options=("structures", "label_column"),
            needs_structures=True,
        ),
        LabelFormat(
            "deeploc",
            _adapters.deeploc_format,
            "DeepLoc labels (CSV/TSV or the 1.0 FASTA) keyed by UniProt accession; AlphaFold DB structures.",
            options=("structures", "label_column", "id_column", "split_column"),
            needs_structures=True,
        ),
    ]


@hookimpl
def protsteps_register_metrics() -> list[Metric]:
    from protsteps.downstream import _metrics

    return [
        Metric(
            "accuracy", _metrics.accuracy_score, "single", "Fraction of proteins whose top class is true."
        ),
        Metric(
            "macro_f1", _metrics.macro_f1_score, "single", "Mean F1 over classes present (true or predicted)."
        ),
        Metric(
            "fmax",
            _metrics.fmax_score,
            "multi",
            "Protein-centric Fmax over thresholds 0, 0.01, ..., 1 (CAFA).",
        ),
        Metric(
            "micro_aupr",
            _metrics.micro_aupr_score,
            "multi",
            "Average precision of all (protein, class) scores.",
        ),
    ]


@hookimpl
def protsteps_register_embeddings_writers() -> list[EmbeddingsWriter]:
    from protsteps.downstream import _embed

    from . import hdf5

    return [
        EmbeddingsWriter("npz", _embed.write_npz, ".npz", "NumPy .npz arrays, read without pickle."),
        EmbeddingsWriter(
            "parquet",
            _embed.write_parquet,
            ".parquet",
            "One Parquet row per chain (needs pyarrow: pip install 'protsteps[parquet]').",
            check=_embed.require_pyarrow,
        ),
        EmbeddingsWriter(
            "hdf5",
            hdf5.write_hdf5,
            ".h5",
            "HDF5 as ProtTrans writes it: a dataset per chain named SOURCE:CHAIN, the rest in the "
            "group protsteps (needs h5py: pip install 'protsteps[hdf5]').",
            check=hdf5.require_h5py,
            more_suffixes=(".hdf5",),
        ),
    ]


@hookimpl
def protsteps_register_commands() -> list[Command]:
    from .commands import embeddings_app

    return [Command("embeddings", embeddings_app, "Look into or convert an embeddings file.")]
