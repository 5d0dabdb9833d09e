"""``protsteps pretrain``: the main job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .._text import count
from ..config import from_dict, to_dict
from ..errors import ProtstepsError
from ..registry import default_catalog
from ._app import THREADS_HELP, app, console, err_console


@app.command()
def pretrain(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Structure files, folders (searched recursively) or text files listing paths. "
            "Without any: data.inputs of the run file, else the bundled example structures.",
            show_default=False,
            metavar="INPUT",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder to create.")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            "-p",
            help="Start from a named run file (protsteps presets lists them, e.g. paper); "
            "--config, options and --set apply on top.",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run file (TOML).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run in this folder from checkpoints/last.pt."),
    ] = None,
    featurizer: Annotated[str | None, typer.Option(help="Featurizer name.")] = None,
    encoder: Annotated[str | None, typer.Option(help="Encoder name (gin, equivariant, ...).")] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="Pretext task; repeat for several (default: distance, dihedral)."),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="Teacher: auto (ESM-2 8M when its weights are available), none, or a name."),
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(help="Scheme: auto (pseudo_bilevel with a teacher, joint without), or a name."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override one setting: section.key=value (tasks.NAME.key=value). Repeatable."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training structures.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Proteins per batch.")] = None,
    max_residues: Annotated[
        int | None, typer.Option(help="Residue budget per batch (replaces --batch-size when > 0).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Featurize cache folder.")] = None,
    threads: Annotated[int | None, typer.Option(min=0, help=THREADS_HELP)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Pretrain an encoder on structures (STEPS); writes a run folder that can be resumed."""
    from ..allocator import keep_freed_memory
    from ..runconfig import TrainConfig, load_run_config
    from ..threads import allow_interop
    from ..training import pretrain as run_pretrain
    from ..training import resume_config

    allow_interop()
    keep_freed_memory()  # this process only runs this command: freed tensors' memory is reused

    catalog = default_catalog()
    if resume is not None:
        changed = [
            name
            for name, value in {
                "INPUTS": inputs,
                "--preset": preset,
                "--config": config,
                "--featurizer": featurizer,
                "--encoder": encoder,
                "--task": task,
                "--teacher": teacher,
                "--scheme": scheme,
                "--set": set_,
                "--batch-size": batch_size,
                "--max-residues": max_residues,
                "--seed": seed,
                "--cache-dir": cache_dir,
            }.items()
            if value
        ]
        if changed:
            raise ProtstepsError(
                f"--resume continues a run exactly as it was configured; remove {', '.join(changed)}"
            )
        if out is not None and out.resolve() != resume.resolve():
            raise ProtstepsError(
                "--resume continues the run in its own folder; drop --out or give the same folder"
            )
        run_config = resume_config(resume, catalog)
        # through the [train] validation, like a new run's options
        overrides = {
            k: v for k, v in {"epochs": epochs, "device": device, "threads": threads}.items() if v is not None
        }
        run_config.train = from_dict(
            TrainConfig, {**to_dict(run_config.train), **overrides}, section="[train]"
        )
        out = resume
    else:
        if out is None:
            raise ProtstepsError("--out RUNDIR is required (or --resume RUNDIR)")
        run_config = load_run_config(
            config,
            catalog,
            components={"featurizer": featurizer, "encoder": encoder, "teacher": teacher, "scheme": scheme},
            tasks=task,
            train={
                "epochs": epochs,
                "batch_size": batch_size,
                "max_residues": max_residues,
                "seed": seed,
                "device": device,
                "threads": threads,
            },
            data={
                "inputs": list(inputs) if inputs else None,
                "cache_dir": str(cache_dir) if cache_dir else None,
            },
            sets=set_ or [],
            preset=preset,
        )
        for note in run_config.notes:  # settings of a renamed component
            err_console.print(note, highlight=False, markup=False, style="yellow")
    from ..featurize import refuse_label_files
    from ..legacy_cache import legacy_note
    from ..training import removed_on_failure

    refuse_label_files(run_config.data.inputs, "pretrain")
    if os.environ.get("RANK", "0") == "0" and (legacy := legacy_note(run_config.data.cache_dir or None)):
        err_console.print(legacy, highlight=False, markup=False, style="yellow")
    # a run that fails before its first checkpoint takes back what it wrote
    with removed_on_failure(out, resume=resume is not None, is_main=os.environ.get("RANK", "0") == "0"):
        result = run_pretrain(run_config, out, catalog, resume=resume is not None, show_progress=not quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one summary is enough
        return
    if result.interrupted:
        err_console.print(
            f"interrupted at step {result.steps} ({count(result.epochs_completed, 'epoch')} done); "
            f"checkpoints/last.pt is saved; continue with: protsteps pretrain --resume {out}",
            highlight=False,
        )
        raise typer.Exit(130)
    best = (
        f"best validation loss {result.best_valid_loss:.4f}"
        if result.best_valid_loss is not None
        else "no validation split (the encoder is the last epoch's)"
    )
    console.print(
        f"done: {count(result.steps, 'step')}, {count(result.epochs_completed, 'epoch')}, {best}"
        + (
            f", {count(result.skipped_batches, 'batch', 'batches')} skipped" if result.skipped_batches else ""
        ),
        highlight=False,
    )
    console.print(f"run folder: {out}  (encoder: {out / 'encoder.pt'})", highlight=False)
