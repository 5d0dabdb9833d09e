"""A real third-party plugin, installed into a fresh virtual environment.

The environment sees the running interpreter's packages (protsteps, torch) through a
``.pth`` file, so only the plugin itself is installed; nothing is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "protsteps-plugin-example"

pytestmark = pytest.mark.integration


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("plugin-env")
    # no pip of its own: the host's pip and setuptools (seen through the .pth) install into it
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = _python(env_dir)
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # make the current environment's packages (protsteps, torch, ...) visible, .pth files included
    host = sysconfig.get_paths()["purelib"]
    Path(purelib, "_protsteps_host.pth").write_text(f"import site; site.addsitedir({host!r})\n")
    _pip_install(env_dir, EXAMPLE)
    return env_dir


def _run(env_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([_python(env_dir), *args], capture_output=True, text=True, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {result.stderr[-3000:]}")
    return result


def _pip_install(env_dir: Path, project: Path) -> None:
    """Install a local project into the environment: no dependencies, nothing downloaded."""
    _run(
        env_dir, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(project)
    )


def test_installed_plugin_components_are_listed(plugin_env):
    result = _run(plugin_env, "-m", "protsteps", "plugins", "--json")
    records = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    encoder = records[("encoder", "sequence_cnn")]
    assert encoder["plugin"] == "example" and encoder["version"] == "0.1.0"
    assert [f["name"] for f in encoder["config"]] == ["hidden_dim", "kernel_size", "layers"]
    assert records[("task", "residue_type")]["plugin"] == "example"
    # the built-in plugins are still there, found through the same entry-point group
    assert any(r["plugin"] == "structure" for r in records.values())


def test_installed_plugin_components_build_from_a_run_config(plugin_env, tmp_path, structures_dir):
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        textwrap.dedent(
            """
            [encoder]
            name = "sequence_cnn"
            hidden_dim = 32
            kernel_size = 3

            [[tasks]]
            name = "residue_type"
            mask_fraction = 0.3

            [teacher]
            name = "none"
            """
        )
    )
    structure = structures_dir / "biopython" / "1A8O.cif"
    script = textwrap.dedent(
        f"""
        import torch, protsteps
        from protsteps.registry import default_catalog
        from protsteps.runconfig import load_run_config
        catalog = default_catalog()
        config = load_run_config({str(run_file)!r}, catalog)
        graphs = protsteps.featurize({str(structure)!r})
        batch = protsteps.collate(graphs)
        from protsteps.components import GRAPH_ATTRIBUTES
        context = protsteps.BuildContext(provides=GRAPH_ATTRIBUTES)
        encoder = catalog.build("encoder", config.encoder.name, config=config.encoder.config, context=context)
        task_choice = config.tasks[0]
        task = catalog.build("task", task_choice.name, config=task_choice.config,
                             context=protsteps.BuildContext(encoder_dim=encoder.out_dim))
        corrupted, state = task.corrupt(batch, torch.Generator().manual_seed(0))
        result = task(corrupted, encoder(corrupted), state)
        result.loss.backward()
        print(type(encoder).__name__, encoder.out_dim, round(float(result.loss), 3) > 0)
        """
    )
    result = _run(plugin_env, "-c", script)
    assert result.stdout.split() == ["SequenceCNN", "32", "True"]


def test_pretrain_runs_with_the_plugins_scheme_and_ramps_the_weight(plugin_env, tmp_path, small_structures):
    """The example's scheme, through the CLI: built with the task list in its context,
    stepping with protsteps.optim's public helpers, its weight schedule in metrics.jsonl."""
    run = tmp_path / "run"
    common = ["--cache-dir", str(tmp_path / "cache"), "-q"]
    args = ["-m", "protsteps", "pretrain", *map(str, small_structures[:3]), "--out", str(run), *common]
    args += ["--teacher", "none", "--encoder", "sequence_cnn", "--task", "distance", "--task", "residue_type"]
    args += ["--scheme", "task_ramp", "--batch-size", "1", "--epochs", "1", "--set", "train.valid_fraction=0"]
    for setting in (
        "scheme.ramp_steps=2",
        "train.log_every=1",
        "encoder.hidden_dim=16",
        "tasks.distance.num_pairs=16",
    ):
        args += ["--set", setting]
    _run(plugin_env, *args)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train"]
    assert [r["weight/residue_type"] for r in steps] == [0.5, 1.0, 1.0]  # the first task is not ramped
    assert all("weight/distance" not in r and r["residue_type/loss"] > 0 for r in steps)
    assert 'name = "task_ramp"' in (run / "config.toml").read_text()

    # a task the run does not train is refused when the run is composed, in one line
    bad = [*args[: args.index("--out") + 1], str(tmp_path / "bad"), *args[args.index("--out") + 2 :]]
    refused = _run(plugin_env, *bad, "--set", 'scheme.ramped=["dihedral"]', check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: scheme 'task_ramp' ramps dihedral, which the run does not train (its tasks: distance, residue_type)"
    )


def _one_module_plugin(folder: Path, name: str, hooks: str) -> Path:
    """A plugin package ``protsteps-NAME`` whose entry point ``NAME`` is ``protsteps_NAME.hooks``."""
    root = folder / f"{name}-plugin"
    (root / f"protsteps_{name}").mkdir(parents=True)
    (root / f"protsteps_{name}" / "__init__.py").write_text("")
    (root / f"protsteps_{name}" / "hooks.py").write_text(hooks)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "protsteps-{name}"
            version = "0.0.1"
            [project.entry-points.protsteps]
            {name} = "protsteps_{name}.hooks"
            """
        )
    )
    return root


def test_a_plugin_that_raises_on_import_does_not_break_the_cli(plugin_env, tmp_path):
    broken = _one_module_plugin(tmp_path, "broken", "raise ImportError('needs a GPU driver')\n")
    _pip_install(plugin_env, broken)
    try:
        result = _run(plugin_env, "-m", "protsteps", "plugins", "--json", check=False)
        assert result.returncode == 0, result.stderr
        names = {r["name"] for r in json.loads(result.stdout)}
        assert "sequence_cnn" in names
        assert "plugin 'broken' failed to load: ImportError: needs a GPU driver" in result.stderr
    finally:
        _run(plugin_env, "-m", "pip", "uninstall", "-y", "-q", "protsteps-broken", check=False)


def test_a_plugin_that_takes_a_used_name_is_an_error_naming_both_packages(plugin_env, tmp_path):
    hooks = """
        import protsteps
        from protsteps_example.encoder import SequenceCNN, SequenceCNNConfig

        @protsteps.hookimpl
        def protsteps_register_encoders():
            return [protsteps.Component("sequence_cnn", SequenceCNN, SequenceCNNConfig, "A copy.")]
        """
    clash = _one_module_plugin(tmp_path, "clash", textwrap.dedent(hooks))
    _pip_install(plugin_env, clash)
    try:
        listing = _run(plugin_env, "-m", "protsteps", "plugins", "--json", check=False)
        assert listing.returncode == 1
        assert "error: encoder 'sequence_cnn' is registered twice: by plugin" in listing.stderr
        assert "plugin 'clash' (package protsteps-clash)" in listing.stderr, listing.stderr
        assert "plugin 'example' (package protsteps-plugin-example)" in listing.stderr, listing.stderr
        names = {r["name"] for r in json.loads(listing.stdout)}
        assert "residue_type" in names and "sequence_cnn" not in names  # the rest is listed
        # other components still build; the claimed name is an error where it is used
        ok = _run(
            plugin_env, "-c", "import protsteps; print(type(protsteps.build('encoder', 'gin')).__name__)"
        )
        assert ok.stdout.strip() == "GINEncoder"
        used = _run(plugin_env, "-m", "protsteps", "plugins", "show", "encoder", "sequence_cnn", check=False)
        assert used.returncode == 1 and "registered twice" in used.stderr
    finally:
        _run(plugin_env, "-m", "pip", "uninstall", "-y", "-q", "protsteps-clash", check=False)
