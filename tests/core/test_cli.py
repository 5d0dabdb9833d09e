"""The CLI's plugin listing, version and error handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from protsteps import registry
from protsteps.cli import main
from protsteps.registry import Catalog, PluginFailure

from . import plugins_for_tests as p


@pytest.fixture
def catalog(monkeypatch):
    catalog = Catalog.from_plugins({"alpha": p.alpha})
    catalog.failures.append(PluginFailure("broken", "ImportError: no module named 'x'"))
    monkeypatch.setattr(registry, "_DEFAULT", catalog)
    return catalog


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("protsteps ")


def test_plugins_json_lists_every_component_with_its_schema(catalog, capsys):
    assert main(["plugins", "--json"]) == 0
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert {(r["kind"], r["name"], r["plugin"]) for r in records} == {
        ("featurizer", "residue_graph", "alpha"),
        ("encoder", "linear", "alpha"),
        ("task", "distance", "alpha"),
        ("task", "dihedral", "alpha"),
        ("scheme", "joint", "alpha"),
    }
    linear = next(r for r in records if r["name"] == "linear")
    assert set(linear) >= {"kind", "name", "plugin", "version", "description", "config"}
    assert {"name": "scale", "type": "float", "default": 1.0, "help": "Scale of the output."} in linear[
        "config"
    ]
    # the broken plugin is reported on stderr, not in the JSON
    assert "plugin 'broken' failed to load: ImportError" in captured.err


def test_plugins_table(catalog, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and "A linear encoder for tests." in out


def test_plugins_show_lists_fields(catalog, capsys):
    assert main(["plugins", "show", "encoder", "linear"]) == 0
    out = capsys.readouterr().out
    for text in ("hidden_dim", "Width of the embedding.", "'none' | 'relu'", "--set encoder.SETTING=VALUE"):
        assert text in out


def test_unknown_component_is_one_line_and_exit_2(catalog, capsys):
    assert main(["plugins", "show", "encoder", "lin"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: unknown encoder 'lin'")
    assert "Traceback" not in err
    assert "Known encoders: linear" in err


def test_a_name_two_plugins_claim_is_listed_as_an_error_and_the_rest_still_works(monkeypatch, capsys):
    monkeypatch.setattr(registry, "_DEFAULT", Catalog.from_plugins({"alpha": p.alpha, "beta": p.beta}))
    assert main(["plugins", "--json"]) == 1
    out, err = capsys.readouterr()
    assert "error: encoder 'linear' is registered twice: by plugin 'alpha' and by plugin 'beta'" in err
    listed = {(r["kind"], r["name"]) for r in json.loads(out)}
    assert ("scheme", "joint") in listed and ("encoder", "linear") not in listed
    assert main(["plugins", "show", "scheme", "joint"]) == 0
    assert main(["plugins", "show", "encoder", "linear"]) == 1
    assert "registered twice" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main(["plugins", "show", "encoder"]) == 2


def test_console_script_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "protsteps", "plugins", "show", "nonsense", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: unknown kind 'nonsense'. Kinds: featurizer, encoder, task, teacher, scheme"
    )
