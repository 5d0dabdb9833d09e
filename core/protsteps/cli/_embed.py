"""``protsteps embed``: per-protein (and per-residue) embeddings to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .._text import count
from ..errors import ProtstepsError
from ._app import LOCATION_HELP, THREADS_HELP, StructureInputs, app, console, err_console


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder in its
    place, or a folder for it that is a file or cannot be made; its folder is created."""
    if path.is_dir():
        raise ProtstepsError(
            f"{option} {path}: is a folder; give a file name (e.g. {path / 'embeddings.npz'})"
        )
    from ..files import writable_folder  # here: protsteps.files imports torch

    writable_folder(path.parent, f"{option} {path}: the folder {path.parent}", "give another path")


@app.command()
def embed(
    inputs: StructureInputs,
    from_: Annotated[
        Path,
        typer.Option(
            "--from",
            help="A pretrain (or finetune) run folder, an encoder.pt file, or a folder protsteps export wrote.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output file: .npz, .parquet (needs pyarrow), or a suffix a plugin's writer takes.",
        ),
    ],
    format_: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Embeddings writer: a registered one (protsteps plugins lists them: npz, parquet, ...; "
            "default: the one whose suffix ends --out).",
        ),
    ] = None,
    per_residue: Annotated[
        bool, typer.Option("--per-residue", help="Also write every residue's embedding.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Proteins per forward pass.")] = 16,
    max_residues: Annotated[
        int, typer.Option(min=0, help="Residue budget per forward pass (replaces --batch-size when > 0).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(help="Featurize cache folder.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Featurizing processes.")] = 1,
    threads: Annotated[int, typer.Option(min=0, help=THREADS_HELP)] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help=LOCATION_HELP),
    ] = None,
) -> None:
    """Embed protein chains with a pretrained encoder and write them with their source and chain ids.

    Inputs that cannot be featurized are reported (and stored in the file) and the rest are embedded. Exits 2 when nothing could be embedded (every input failed).
    """
    from ..allocator import keep_freed_memory
    from ..downstream import embed as run_embed
    from ..downstream import load_backbone
    from ..export import location_settings
    from ..extensions import writer_for
    from ..registry import default_catalog
    from ..threads import allow_interop, using_threads

    allow_interop()
    keep_freed_memory()  # this process only runs this command: freed tensors' memory is reused

    # before any work: an unknown writer, a suffix no writer takes or a missing package
    writer = writer_for(default_catalog().extensions, out, format_)
    if writer.check is not None:
        writer.check()
    check_output_file(out, "--out")
    settings = location_settings(set_ or [])
    with using_threads(threads):
        backbone = load_backbone(from_, settings=settings)
        for note in backbone.notes:  # locations the encoder file named and that are not used
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        result = run_embed(
            inputs,
            backbone,
            per_residue=per_residue,
            batch_size=batch_size,
            max_residues=max_residues,
            device=device,
            cache_dir=cache_dir,
            workers=workers,
        )
    for failure in result.failed[:5]:
        err_console.print(f"[yellow]failed:[/] {escape(failure['error'])}", highlight=False, soft_wrap=True)
    if len(result.failed) > 5:
        err_console.print(
            f"... and {len(result.failed) - 5} more (all listed in the output file)", highlight=False
        )
    if len(result) == 0:
        raise ProtstepsError(
            f"nothing could be embedded: {count(len(result.failed), 'input')} failed"
            + (f" (first: {result.failed[0]['error']})" if result.failed else "")
        )
    result.save(out, writer.name)
    console.print(
        f"{count(len(result), 'chain')} embedded (d = {result.embeddings.shape[1]}"
        + (
            f", {result.residue_embeddings.shape[0]} residues"
            if result.residue_embeddings is not None
            else ""
        )
        + f"), {count(len(result.failed), 'input')} failed -> {escape(str(out))}",
        highlight=False,
    )
