"""The command line starts without torch (or numpy): ``--version``, ``--help`` and every
command's ``--help`` run in a fresh interpreter that imports neither (issue 14 D5). Timings are
``benchmarks/cli_startup.py``'s job; these tests check what is imported, which does not
depend on how busy the machine is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: runs ``python -m protsteps ARGS`` in this interpreter, then prints the exit status and
#: which heavy modules it imported on a last line of its own
_PROBE = """
import runpy, sys
sys.argv = ["protsteps", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("protsteps", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
heavy = [name for name in ("torch", "numpy") if name in sys.modules]
print("\\n@probe", code, *heavy)
"""

#: protsteps' own commands and the built-in plugins' (``embeddings``); a new command must be
#: added here (test_every_command_is_probed says so)
COMMANDS = [
    "cache",
    "embed",
    "embeddings",
    "export",
    "featurize",
    "finetune",
    "plugins",
    "presets",
    "pretrain",
]


def probe(*args: str, pythonpath: Path | None = None) -> tuple[int, set[str], str]:
    """Run the CLI with ``args`` in a fresh interpreter: (exit status, heavy modules imported,
    output before the probe's line)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=300
    )
    output, _, last = done.stdout.rstrip("\n").rpartition("\n@probe ")
    assert done.returncode == 0 and last, f"the probe failed:\n{done.stdout}\n{done.stderr}"
    code, *heavy = last.split()
    return int(code), set(heavy), output + done.stderr


def test_version_imports_neither_torch_nor_numpy():
    code, heavy, output = probe("--version")
    assert code == 0 and output.startswith("protsteps ")
    assert not heavy, f"protsteps --version imported {heavy}"


def test_help_lists_every_command_without_importing_torch_or_numpy():
    code, heavy, output = probe("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in output, f"protsteps --help does not list {command}"
    assert not heavy, f"protsteps --help imported {heavy}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_help_imports_neither_torch_nor_numpy(command: str):
    code, heavy, output = probe(command, "--help")
    assert code == 0, output
    assert "Usage:" in output
    assert not heavy, f"protsteps {command} --help imported {heavy}"


@pytest.mark.parametrize("subcommand", ["info", "migrate"])
def test_cache_subcommands_help_imports_neither_torch_nor_numpy(subcommand: str):
    code, heavy, output = probe("cache", subcommand, "--help")
    assert code == 0 and "--cache-dir" in output, output
    assert not heavy, f"protsteps cache {subcommand} --help imported {heavy}"


def test_every_command_is_probed():
    """The commands the CLI lists (its own and the installed plugins') are the probed ones."""
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from protsteps.cli._app import own_commands, plugin_commands\n"
            "own = own_commands()\n"
            "print(' '.join(sorted({*own, *plugin_commands(own)})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert listed.stdout.split() == sorted(COMMANDS)


def _install_heavy_plugin(folder: Path) -> None:
    """A third-party plugin found through its entry point, whose hooks module imports torch
    at the top (as many will): a ``heavy`` command."""
    (folder / "heavy_startup_plugin.py").write_text(
        textwrap.dedent(
            """
            import torch
            import typer

            from protsteps import hookimpl
            from protsteps.extensions import Command

            app = typer.Typer(help="Sum of two ones, computed by torch.")


            @app.command()
            def total() -> None:
                print("sum", float(torch.ones(2).sum()))


            @hookimpl
            def protsteps_register_commands():
                return [Command("heavy", app, "A plugin command that imports torch at the top.")]
            """
        )
    )
    info = folder / "heavy_startup_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: heavy-startup-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[protsteps]\nheavy = heavy_startup_plugin\n")


def test_a_plugin_that_imports_torch_at_the_top_still_works(tmp_path: Path):
    _install_heavy_plugin(tmp_path)
    code, heavy, output = probe("--help", pythonpath=tmp_path)
    assert code == 0
    assert "heavy" in output and "A plugin command that imports torch" in output
    assert "torch" in heavy  # it is slower, not broken
    code, _, output = probe("heavy", pythonpath=tmp_path)
    assert code == 0 and "sum 2.0" in output


def test_submodules_are_attributes_of_the_package_as_before():
    """With nothing imported eagerly, ``protsteps.data`` and the like still work after a plain
    ``import protsteps`` (loaded on first use); a name that is no submodule stays an error."""
    code = (
        "import protsteps\n"
        "assert protsteps.data.GraphDataset.__name__ == 'GraphDataset'\n"
        "assert protsteps.store.GraphStore.__name__ == 'GraphStore'\n"
        "assert callable(protsteps.featurize)\n"
        "try:\n"
        "    protsteps.no_such_module\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
