"""``protsteps presets``: the named run files plugins ship."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from ..registry import default_catalog
from ._app import app, console
from ._plugins import report_failures

presets_app = typer.Typer(
    help="List the presets (named run files for pretrain --preset), or print one.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(presets_app, name="presets")


@presets_app.callback()
def presets(ctx: typer.Context) -> None:
    """List every preset: name, plugin, description."""
    if ctx.invoked_subcommand is not None:
        return
    catalog = default_catalog()
    report_failures()
    table = Table(title="protsteps presets (pretrain --preset NAME)")
    for column in ("name", "plugin", "description"):
        table.add_column(column)
    for name in sorted(catalog.presets):
        entry = catalog.presets[name]
        table.add_row(entry.name, entry.plugin, entry.description)
    console.print(table)


@presets_app.command("show")
def show(name: Annotated[str, typer.Argument(help="The preset's name.", metavar="NAME")]) -> None:
    """Print a preset's run file (TOML), to read or to copy and edit."""
    entry = default_catalog().preset(name)
    sys.stdout.write(entry.preset.text if entry.preset.text.endswith("\n") else entry.preset.text + "\n")
