"""Developer sessions: ``nox -l`` lists them, ``nox -s tests`` runs one.

Each session installs torch pinned first (an unpinned torch in an empty environment
resolves to a multi-GB CUDA build), then protsteps with its dev extra.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"
#: the scatter helper's own tests and the models that reduce over segments with it
SCATTER_TESTS = (
    "tests/core/test_scatter.py",
    "tests/plugins/test_gnn.py",
    "tests/plugins/test_tasks.py",
    "tests/plugins/test_bilevel.py",
    "tests/plugins/test_learning.py",
)
PYTHON = "3.11"


def _install(session: nox.Session, *extra: str) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]", *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite, as CI and the README run it (native scatter backend)."""
    _install(session)
    session.run("python", "-m", "pytest", "-n", "2", *session.posargs)


@nox.session(python=PYTHON)
def tests_scatter(session: nox.Session) -> None:
    """The scatter and model tests with torch-scatter installed (a ~5 minute source build)."""
    _install(session)
    session.install("--no-build-isolation", "torch-scatter")
    session.run(
        "python",
        "-m",
        "pytest",
        "-n",
        "2",
        *SCATTER_TESTS,
        *session.posargs,
        env={"PROTSTEPS_REQUIRE_TORCH_SCATTER": "1"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "core", "plugins", "tests", "benchmarks", "docs", "noxfile.py")
    session.run("ruff", "format", "--check", "core", "plugins", "tests", "benchmarks", "docs", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on the core package."""
    _install(session)
    session.run("mypy", "core/protsteps")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Check that the generated references (CLI, component configs) match the code."""
    _install(session)
    session.run("python", "docs/generate.py", "--check")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark in benchmarks/ and print their tables."""
    _install(session)
    for script in ("featurize.py", "memory.py", "teacher.py", "schemes.py"):
        session.run("python", f"benchmarks/{script}", *session.posargs)
