"""``protsteps embeddings``: look into an embeddings file, or write it in another format.

Mounted through the hook ``protsteps_register_commands``, as a plugin's command would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from protsteps.downstream import Embeddings

embeddings_app = typer.Typer(
    help="Look into an embeddings file written by protsteps embed, or convert it to another format.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)


def read_any(path: Path) -> Embeddings:
    """An embeddings file of any built-in writer (``.npz``, ``.parquet``, ``.h5``/``.hdf5``)."""
    from protsteps.downstream import load_embeddings  # torch: only when a file is read

    from .hdf5 import is_hdf5, read_hdf5

    return read_hdf5(path) if is_hdf5(path) else load_embeddings(path)


@embeddings_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="A file written by protsteps embed.", show_default=False)],
) -> None:
    """Print what an embeddings file holds: chains, width, residues, failed inputs, encoder."""
    data = read_any(file)
    residues = "no" if data.residue_embeddings is None else str(data.residue_embeddings.shape[0])
    width = int(data.embeddings.shape[1]) if data.embeddings.ndim == 2 else 0
    console.print(
        f"{escape(str(file))}: {len(data)} chains, d = {width}, per-residue embeddings: {residues}, "
        f"failed inputs: {len(data.failed)}",
        highlight=False,
    )
    for key in ("encoder", "encoder_name", "teacher", "protsteps_version"):
        if key in data.meta:
            console.print(f"  {key}: {escape(str(data.meta[key]))}", highlight=False)


@embeddings_app.command("convert")
def convert(
    source: Annotated[Path, typer.Argument(help="A file written by protsteps embed.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="The file to write.", show_default=False)],
    format_: Annotated[
        str | None,
        typer.Option(
            "--format", help="Embeddings writer (protsteps plugins lists them; default: by OUT's suffix)."
        ),
    ] = None,
) -> None:
    """Write an embeddings file again in another format (e.g. .npz to .parquet or .h5)."""
    data = read_any(source)
    data.save(out, format_)
    console.print(f"{len(data)} chains -> {escape(str(out))}", highlight=False)
