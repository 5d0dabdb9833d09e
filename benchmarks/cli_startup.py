"""How long the command line takes to start: ``protsteps --version``, ``--help`` and every
command's ``--help``, against ``python -c pass`` (the interpreter alone) and what the CLI
must not pay for (``import torch``) or cannot avoid (typer and rich, the plugins' entry
points, and a bare two-command Typer app's own help screens: the toolkit's floor).

Every row is a fresh process, timed wall-clock from start to exit; the rows take turns,
``--repeats`` rounds, so that a busy spell on a shared machine spreads over all of them. One
more, untimed, run of each row with ``PYTHONPROFILEIMPORTTIME`` says whether it imported
torch and numpy. The load average before the first round and after the last says how busy
the machine was.

Run from the repository root (the environment where protsteps is installed):

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --repeats 15

It prints a Markdown table: median and fastest seconds per row and the median over
``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: the toolkit's floor: a bare Typer app with two commands (typer and rich only)
_BARE_TYPER = """
import typer
app = typer.Typer(add_completion=False)
@app.command()
def one(x: int = 1, y: str = "s") -> None: ...
@app.command()
def two(x: int = 1) -> None: ...
app()
"""

_SCAN = (
    "import importlib.metadata as m; "
    "[ep for d in m.distributions() for ep in d.entry_points if ep.group == 'protsteps']"
)


def protsteps_command() -> list[str]:
    """The console script next to this interpreter, else ``python -m protsteps``."""
    script = Path(sys.executable).with_name("protsteps")
    if script.is_file():
        return [str(script)]
    found = shutil.which("protsteps")
    return [found] if found else [sys.executable, "-m", "protsteps"]


def commands() -> list[str]:
    """Every command ``protsteps --help`` lists: protsteps' own and the installed plugins'."""
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
    )
    return listed.stdout.split()


def rows() -> list[tuple[str, list[str]]]:
    cli = protsteps_command()
    python = sys.executable
    out = [
        ("python -c pass", [python, "-c", "pass"]),
        ('python -c "import torch"', [python, "-c", "import torch"]),
        ('python -c "import numpy"', [python, "-c", "import numpy"]),
        ('python -c "import typer, rich.console"', [python, "-c", "import typer, rich.console"]),
        ("entry-point scan (importlib.metadata)", [python, "-c", _SCAN]),
        ("bare Typer app --help", [python, "-c", _BARE_TYPER, "--help"]),
        ("bare Typer app COMMAND --help", [python, "-c", _BARE_TYPER, "one", "--help"]),
        ("protsteps --version", [*cli, "--version"]),
        ("protsteps --help", [*cli, "--help"]),
    ]
    out += [(f"protsteps {name} --help", [*cli, name, "--help"]) for name in commands()]
    return out


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def heavy_imports(argv: list[str]) -> str:
    """Which of torch and numpy a run of ``argv`` imports (from ``-X importtime``'s report)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    found = [name for name in ("torch", "numpy") if name in imported]
    return ", ".join(found) if found else "neither"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="rounds (each row once per round)")
    args = parser.parse_args()

    table = rows()
    for _, argv in table:  # warm the file cache and compiled bytecode
        run_once(argv)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label, _ in table}
    for _ in range(args.repeats):
        for label, argv in table:
            times[label].append(run_once(argv))
    load_after = os.getloadavg()
    base = statistics.median(times["python -c pass"])

    print(
        f"{args.repeats} runs per row, taking turns; {os.cpu_count()} CPUs; load average "
        f"(1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; Python "
        f"{sys.version.split()[0]}"
    )
    print()
    print("| command | median s | fastest s | median - `python -c pass` s | imports |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, argv in table:
        median = statistics.median(times[label])
        print(
            f"| `{label}` | {median:.3f} | {min(times[label]):.3f} | {median - base:+.3f} | "
            f"{heavy_imports(argv)} |"
        )


if __name__ == "__main__":
    main()
