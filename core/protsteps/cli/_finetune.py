"""``protsteps finetune``: a classifier on labelled structures, from a pretrained encoder or
from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ..errors import ProtstepsError
from ._app import THREADS_HELP, app, console, err_console


def read_labels(
    labels: Path,
    format_: str,
    *,
    structures: Path | None,
    label_column: str | None,
    split_column: str | None,
    group_column: str | None,
    id_column: str | None,
    label_separator: str | None,
) -> Any:
    """The :class:`~protsteps.downstream.LabelledSet` of ``labels`` read by the label format
    registered as ``format_``, with the options that format takes (others given are an
    error)."""
    from ..downstream._adapters import read_labels as read_with_format
    from ..extensions import LabelOptions

    options = LabelOptions(
        structures=structures,
        label_column=label_column,
        split_column=split_column,
        group_column=group_column,
        id_column=id_column,
        label_separator=label_separator,
    )
    return read_with_format(labels, format_, options)


def scratch_config(config: Path | None, teacher: str | None, sets: list[str]) -> Any:
    """The run config a from-scratch encoder is built from: a run file, a pretrain run
    folder's ``config.toml``, or the default, then ``--teacher`` and ``--set``."""
    from ..registry import default_catalog
    from ..runconfig import load_run_config

    if config is not None and config.is_dir():
        config = config / "config.toml"
    run_config = load_run_config(config, default_catalog(), components={"teacher": teacher}, sets=sets)
    for note in run_config.notes:  # settings of a renamed component
        err_console.print(note, highlight=False, markup=False, style="yellow")
    return run_config


@app.command()
def finetune(
    labels: Annotated[
        Path,
        typer.Argument(
            help="The labels: a manifest (CSV/TSV); with --format protfunct the ProtFunct folder; "
            "with --format deeploc a DeepLoc CSV/TSV or FASTA file.",
            show_default=False,
            metavar="LABELS",
        ),
    ],
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="A pretrain run folder, an encoder.pt, a folder protsteps export wrote, or 'none' to "
            "train the same architecture from scratch.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to create.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="Label format: a registered one (protsteps plugins lists them: manifest, protfunct, deeploc, ...).",
        ),
    ] = "manifest",
    structures: Annotated[
        Path | None,
        typer.Option(help="protfunct/deeploc: folder searched (recursively) for the structure files."),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(
            help="Label column (manifest default: label; protfunct: ec_number or ec_class; deeploc: location or membrane)."
        ),
    ] = None,
    split_column: Annotated[
        str | None,
        typer.Option(
            help="Column with train/valid/test (default: split; none in the file: a stratified split is drawn)."
        ),
    ] = None,
    group_column: Annotated[
        str | None,
        typer.Option(help="manifest: rows with the same value here stay in the same split when drawn."),
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="deeploc CSV/TSV: the UniProt accession column.")
    ] = None,
    label_separator: Annotated[
        str | None,
        typer.Option(help="manifest: separates several labels in one cell (multi-label targets; default ;)."),
    ] = None,
    task: Annotated[
        Literal["auto", "single", "multi"] | None,
        typer.Option(help="single- or multi-label (auto: multi when a protein has several labels)."),
    ] = None,
    mode: Annotated[
        Literal["probe", "full"] | None,
        typer.Option(
            help="probe: frozen encoder, only the head learns; full: the encoder learns too (default)."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default 30).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of initialisation and batch order (default 0).")
    ] = None,
    split_seed: Annotated[int | None, typer.Option(help="Seed of a drawn split (default: --seed).")] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Train/valid/test shares of a drawn split, e.g. 0.8,0.1,0.1 (the default)."),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of the head (default 1e-3).")] = None,
    encoder_lr: Annotated[
        float | None, typer.Option(help="Learning rate of the encoder (full mode; default: --lr).")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 0).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Proteins per batch (default 16).")] = None,
    head: Annotated[
        str | None,
        typer.Option(help="The head: a registered one (protsteps plugins lists them; default mlp)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Validation metric choosing the best epoch (default: macro_f1 single-, fmax multi-label)."
        ),
    ] = None,
    head_hidden: Annotated[
        int | None, typer.Option(help="Hidden width of the head (0: linear; default 256).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    precision: Annotated[
        Literal["32", "bf16", "16"] | None,
        typer.Option(
            help="Training arithmetic: 32, bf16 (autocast, CPU or CUDA) or 16 (autocast and a gradient "
            "scaler, CUDA only); default 32."
        ),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Featurize cache folder.")] = None,
    workers: Annotated[int | None, typer.Option(help="Featurizing processes.")] = None,
    threads: Annotated[int | None, typer.Option(min=0, help=THREADS_HELP)] = None,
    callback: Annotated[
        list[str] | None,
        typer.Option(
            "--callback",
            help="Training callback or logger given every epoch's record, repeatable (protsteps plugins "
            "lists them; default: csv, which writes RUNDIR/metrics.csv).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="With --from none: a run file, or a pretrain run folder, giving the architecture.",
        ),
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="With --from none: the teacher (auto, none, esm).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="With --from none: override one run setting, section.key=value. With a pretrained "
            "encoder: one of its locations, KIND.KEY=PATH (teacher.cache_dir=/scratch/trunks). Repeatable.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Train a classifier on labelled structures; writes metrics.json, plots and weights to OUT.

    The best epoch is chosen on the validation set (macro-F1, or Fmax for multi-label) and the test set is scored once, with those weights. Labelled rows that cannot be used are listed in OUT/skipped.tsv.
    """
    from ..allocator import keep_freed_memory
    from ..config import from_dict
    from ..downstream import FinetuneConfig
    from ..downstream import finetune as run_finetune
    from ..export import location_settings
    from ..threads import allow_interop

    allow_interop()
    keep_freed_memory()  # this process only runs this command: freed tensors' memory is reused

    scratch = from_.strip().lower() == "none"
    if not scratch and (config is not None or teacher is not None):
        raise ProtstepsError(
            "--config and --teacher describe a from-scratch encoder (--from none); a pretrained "
            "encoder brings its own architecture, featurizer and teacher (--set can give its "
            "locations: teacher.cache_dir=PATH)"
        )
    locations = None if scratch else location_settings(set_ or [])
    shares = None
    if split is not None:
        try:
            shares = [float(x) for x in split.split(",")]
        except ValueError:
            raise ProtstepsError(f"--split {split!r}: expected three numbers like 0.8,0.1,0.1") from None
    values = {
        "task": task,
        "mode": mode,
        "epochs": epochs,
        "seed": seed,
        "split_seed": split_seed,
        "split_fractions": shares,
        "lr": lr,
        "encoder_lr": encoder_lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "head": head,
        "metric": metric,
        "head_hidden": head_hidden,
        "device": device,
        "precision": precision,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "workers": workers,
        "threads": threads,
        "callbacks": callback,
    }
    finetune_config = from_dict(
        FinetuneConfig, {k: v for k, v in values.items() if v is not None}, section="finetune"
    )
    data = read_labels(
        labels,
        format_,
        structures=structures,
        label_column=label_column,
        split_column=split_column,
        group_column=group_column,
        id_column=id_column,
        label_separator=label_separator,
    )
    run_config = scratch_config(config, teacher, set_ or []) if scratch else None
    result = run_finetune(
        data,
        None if scratch else Path(from_),
        out,
        finetune_config,
        scratch=run_config,
        show_progress=not quiet,
        settings=locations,
    )
    console.print(f"run folder: {out}  (metrics: {out / 'metrics.json'})", highlight=False)
    if quiet:
        test = result.test
        metric = result.metrics["selection"]["metric"].removeprefix("valid ")
        value = test.get(metric)
        console.print(
            f"best epoch {result.best_epoch}; test {metric} {'n/a' if value is None else f'{value:.3f}'}",
            highlight=False,
        )
