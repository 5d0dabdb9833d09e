"""``protsteps export``: a pretrained encoder as a folder to share (model.safetensors,
config.json, a model card)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._app import app, console, err_console


@app.command()
def export(
    run: Annotated[
        Path,
        typer.Argument(
            help="A pretrain run folder, or an encoder.pt file.", show_default=False, metavar="RUN"
        ),
    ],
    dir: Annotated[
        Path,
        typer.Argument(
            help="The folder to write: model.safetensors, config.json and README.md (a model card).",
            show_default=False,
            metavar="DIR",
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an earlier export in DIR (a folder holding anything else is refused)."
        ),
    ] = False,
) -> None:
    """Export a pretrained encoder as a Hub-style folder that finetune/embed --from DIR and protsteps.from_pretrained(DIR) load.

    The folder holds no pickle: tensors in model.safetensors, settings, plugins, versions and the weights' SHA-256 in config.json. It is built beside DIR and renamed into place once it loads back. Pretraining checkpoints stay in the run folder (resume from there).
    """
    from ..hub import export_model  # torch is imported only when a command needs it

    written = export_model(run, dir, force=force)
    for note in written.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(
        f"exported {written.tensors} tensors ({written.parameters:,} values, "
        f"{written.weights_bytes / 1024:.1f} KiB) -> {escape(str(written.folder))} "
        "(model.safetensors, config.json, README.md)",
        highlight=False,
    )
