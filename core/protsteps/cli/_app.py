from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from .._version import __version__
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

app = typer.Typer(
    name="protsteps",
    help="Structure-aware protein self-supervised learning (STEPS), composed from plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,  # help screens with every option's default and no <bool> tags
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
