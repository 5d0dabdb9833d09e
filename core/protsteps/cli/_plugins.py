"""``protsteps plugins``: what is installed, and each component's settings."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..capabilities import describe_entry
from ..config import fields_of
from ..extensions import EXTENSION_KINDS, ExtensionEntry
from ..registry import default_catalog
from ._app import app, command_clashes, console, err_console, own_commands

plugins_app = typer.Typer(
    help="List installed components, or show one component's settings.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(plugins_app, name="plugins")


def report_failures() -> None:
    catalog = default_catalog()
    for failure in catalog.failures:
        err_console.print(f"[yellow]warning:[/] {escape(str(failure))}", highlight=False, soft_wrap=True)
    for conflict in catalog.conflicts:
        err_console.print(f"[bold red]error:[/] {escape(str(conflict))}", highlight=False, soft_wrap=True)
    for clash in command_clashes(own_commands()):
        err_console.print(f"[bold red]error:[/] {escape(clash)}", highlight=False, soft_wrap=True)


@plugins_app.callback()
def plugins(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list with each component's config schema.")
    ] = False,
) -> None:
    """List every installed component: kind, name, plugin, version, description."""
    if ctx.invoked_subcommand is not None:
        return
    catalog = default_catalog()
    report_failures()
    entries = catalog.entries()
    # heads, label formats, metrics, writers, callbacks, commands (protsteps.extensions)
    extensions = catalog.extensions.entries()
    if as_json:
        records = [e.as_json() for e in entries] + [e.as_json() for e in extensions]
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    else:
        table = Table(title="protsteps components")
        for column in ("kind", "name", "plugin", "version", "description"):
            table.add_column(column)
        for e in entries:
            table.add_row(e.kind, e.name, e.plugin, e.version, e.description)
        for x in extensions:
            table.add_row(x.kind.replace("_", " "), x.name, x.plugin, x.version, escape(x.description))
        console.print(table)
    # listed above without the names two plugins claim (or a plugin's command protsteps has)
    if catalog.conflicts or command_clashes(own_commands()):
        raise typer.Exit(1)


@plugins_app.command("show")
def show(
    kind: Annotated[
        str,
        typer.Argument(
            help="featurizer, encoder, task, teacher or scheme; or head, label_format, metric, "
            "embeddings_writer, callback or command.",
            metavar="KIND",
        ),
    ],
    name: Annotated[str, typer.Argument(help="The component's name.", metavar="NAME")],
) -> None:
    """Show one component's config fields: type, default and help (or what an extension declares)."""
    catalog = default_catalog()
    report_failures()
    if kind.replace("-", "_") in EXTENSION_KINDS:
        _show_extension(catalog.extensions.get(kind.replace("-", "_"), name))
        return
    entry = catalog.get(kind, name)
    console.print(
        f"[bold]{entry.kind} {entry.name}[/]  (plugin {entry.plugin} {entry.version})\n"
        f"{escape(entry.description)}",
        highlight=False,
    )
    for line in _declarations(describe_entry(entry), entry.kind):
        console.print(line, highlight=False, markup=False)
    fields = fields_of(entry.config)
    if not fields:
        console.print("\n(no settings)", highlight=False)
    for f in fields:
        default = "unset" if f.default is None else repr(f.default)
        console.print(f"\n  [bold]{f.name}[/]: {escape(f.type)} = {escape(default)}", highlight=False)
        console.print(f"      {escape(f.help)}", highlight=False)
    console.print()
    console.print(
        f"Set in a run file under [{'[tasks]' if kind == 'task' else kind}] or with "
        f"--set {'tasks.' + name if kind == 'task' else kind}.SETTING=VALUE",
        highlight=False,
        markup=False,
    )


def _declarations(info: dict[str, Any], kind: str) -> list[str]:
    """``requires`` / ``provides`` / capabilities / needs / auto of a component, one line each."""

    def listed(values: Any, unknown: str) -> str:
        if values is None:
            return unknown
        return ", ".join(values) or "none"

    when = " (under the default settings)" if info.get("capabilities_depend_on_config") else ""
    lines = ["", f"requires (batch attributes): {listed(info.get('requires'), 'known when built')}"]
    if kind == "featurizer":
        lines.append(f"provides (batch attributes): {listed(info.get('provides'), 'known when built')}")
    lines.append(f"capabilities{when}: {listed(info.get('capabilities'), 'read from the built component')}")
    lines.append(f"needs{when}: {listed(info.get('needs'), 'none')}")
    if "declarations_error" in info:
        lines.append(f"declarations cannot be read: {info['declarations_error']}")
    if kind in ("teacher", "scheme"):
        auto = info.get("auto")
        lines.append(f"auto: {'not tried' if auto is None else f'tried at place {auto} (lower first)'}")
    return lines


def _show_extension(entry: ExtensionEntry) -> None:
    """A head, label format, metric, writer, callback or command: who registered it, and
    what it declares (a format's options, a metric's task, a writer's suffix)."""
    label = EXTENSION_KINDS[entry.kind][2]
    console.print(
        f"[bold]{label} {entry.name}[/]  (plugin {entry.plugin} {entry.version})\n{escape(entry.description)}",
        highlight=False,
    )
    details = {
        k: v
        for k, v in entry.as_json().items()
        if k not in ("kind", "name", "plugin", "version", "description")
    }
    for key, value in details.items():
        if key == "options":
            shown = ", ".join(f"--{o.replace('_', '-')}" for o in value) or "none"
        else:
            shown = str(value)
        console.print(f"  {key}: {shown}", highlight=False, markup=False)
