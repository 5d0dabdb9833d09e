from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from .._version import __version__
from ..errors import DuplicateComponentError
from ._help import Group

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: the positional structure inputs of ``featurize`` and ``embed``
StructureInputs = Annotated[
    list[str],
    typer.Argument(
        help="Structure files (path:CHAIN selects chains), folders (searched recursively) "
        "or text files listing paths.",
        show_default=False,
        metavar="INPUT",
    ),
]

#: the ``--threads`` option of every command that computes
THREADS_HELP = (
    "CPU threads for torch (0: auto: OMP_NUM_THREADS when set, else the physical cores shared "
    "among processes, fewer when the load average says the machine is busy). On a shared "
    "machine, 1 is a safe choice."
)

#: the ``--set`` option of the commands that load a pretrained encoder
LOCATION_HELP = (
    "A location the pretrained encoder's file does not decide: KIND.KEY=PATH, e.g. "
    "teacher.cache_dir=/scratch/trunks (the teacher's trunk cache on disk). Repeatable."
)


class _Root(Group):
    """The root command, with the commands plugins register (hook
    ``protsteps_register_commands``) mounted as ``protsteps NAME``. Plugins are discovered
    only when a name is not one of protsteps' own commands, or to list every command; a
    plugin's command never replaces one of protsteps' own."""

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return [*own, *sorted(name for name in plugin_commands(own) if name not in own)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        return plugin_commands(sorted(self.commands)).get(cmd_name)


_MOUNTED: dict[int, dict[str, Any]] = {}


def plugin_commands(own: list[str]) -> dict[str, Any]:
    """The click commands of the installed plugins' :class:`~protsteps.extensions.Command`
    records, by name (names protsteps uses itself left out: :func:`command_clashes` reports
    them). A name two plugins register raises the error naming both when it is used."""
    from ..registry import default_catalog

    catalog = default_catalog()
    mounted = _MOUNTED.get(id(catalog))
    if mounted is None:
        mounted = {}
        for entry in catalog.extensions.entries("command"):
            if entry.name not in own:
                mounted[entry.name] = _click_command(entry)
        _MOUNTED.clear()
        _MOUNTED[id(catalog)] = mounted
    conflicts = catalog.extensions.conflicts_of("command")
    return {**mounted, **{name: _Refused(name, error) for name, error in conflicts.items()}}


def own_commands() -> list[str]:
    """The names of protsteps' own commands."""
    return sorted(typer.main.get_group(app).commands)


def command_clashes(own: list[str]) -> list[str]:
    """One line per plugin command whose name is one of protsteps' own commands."""
    from ..registry import default_catalog

    return [
        f"command '{entry.name}' of plugin '{entry.plugin}' is not mounted: protsteps' own command "
        f"'{entry.name}' has that name; rename it in the plugin"
        for entry in default_catalog().extensions.entries("command")
        if entry.name in own
    ]


def _click_command(entry: Any) -> Any:
    command = typer.main.get_command(entry.record.app)
    command.name = entry.name
    # a mounted app's own shell-completion options mean nothing under protsteps
    command.params = [p for p in command.params if p.name not in ("install_completion", "show_completion")]
    if not command.help and not command.short_help:
        command.help = entry.description
    return command


class _Refused(typer.core.TyperCommand):
    """A command name that two plugins register: using it prints the error naming both."""

    def __init__(self, name: str, error: DuplicateComponentError) -> None:
        super().__init__(
            name, help=f"(not usable: {error})", context_settings={"ignore_unknown_options": True}
        )
        self.error = error

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        raise self.error


app = typer.Typer(
    name="protsteps",
    help="Structure-aware protein self-supervised learning (STEPS), composed from plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=_Root,  # help screens with every option's default and no <bool> tags; plugin commands
)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"protsteps {__version__}", highlight=False)
        raise typer.Exit()


class _Options:
    """Options of the root command that :func:`protsteps.cli.main` reads after a command."""

    debug: bool = False


options = _Options()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an error, print the full traceback (with the plugin's original exception) "
            "before the one-line message.",
        ),
    ] = False,
) -> None:
    """Structure-aware protein self-supervised learning (STEPS), composed from plugins."""
    options.debug = debug
