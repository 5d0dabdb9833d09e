"""A plugin's own exception raised while building its component: one line naming the
component and the plugin (the traceback with ``--debug``)."""

from __future__ import annotations

import dataclasses
import importlib.metadata

import pytest

from protsteps import Component, hookimpl, registry
from protsteps.cli import main
from protsteps.errors import CompositionError, ConfigError
from protsteps.registry import ENTRY_POINT_GROUP, Catalog

from .plugins_for_tests import LinearConfig


@dataclasses.dataclass
class _NoSettings:
    pass


def _refuses(config, context):
    raise ValueError("hidden_dim must be a multiple of 8 for this encoder")


def _refuses_with_a_config_error(config, context):
    raise ConfigError("[encoder] (careful): hidden_dim must be even")


class _FaultyPlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        return [
            Component("x", _refuses, LinearConfig, "An encoder whose factory raises ValueError."),
            Component("careful", _refuses_with_a_config_error, _NoSettings, "Raises protsteps' own error."),
        ]


@pytest.fixture
def catalog(monkeypatch) -> Catalog:
    """The installed built-in plugins plus plugin 'y' (whose encoders raise), as the default."""
    plugins: dict[str, object] = {
        ep.name: ep.load() for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    }
    plugins["y"] = _FaultyPlugin()
    made = Catalog.from_plugins(plugins)
    monkeypatch.setattr(registry, "_DEFAULT", made)
    return made


def test_a_factorys_own_exception_becomes_a_composition_error_naming_the_plugin(catalog):
    with pytest.raises(CompositionError) as caught:
        catalog.build("encoder", "x")
    assert str(caught.value) == (
        "encoder 'x' of plugin 'y' could not be built: ValueError: hidden_dim must be a multiple of 8 "
        "for this encoder"
    )
    assert isinstance(caught.value.__cause__, ValueError)  # chained: the original is kept
    # protsteps' own errors pass through unchanged
    with pytest.raises(ConfigError, match=r"^\[encoder\] \(careful\): hidden_dim must be even$"):
        catalog.build("encoder", "careful")


def test_the_cli_prints_one_line_and_the_traceback_only_with_debug(catalog, tmp_path, capsys):
    args = ["pretrain", "--out", str(tmp_path / "run"), "--encoder", "x", "--teacher", "none", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: encoder 'x' of plugin 'y' could not be built: ValueError: hidden_dim must be a multiple "
        "of 8 for this encoder\n"
    )
    assert not (tmp_path / "run").exists()

    assert main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in _refuses" in err and "ValueError: hidden_dim must be a multiple of 8" in err
    assert "The above exception was the direct cause of the following exception" in err
    assert err.endswith(
        "error: encoder 'x' of plugin 'y' could not be built: ValueError: hidden_dim must be a multiple of 8 for this encoder\n"
    )

    # the flag does not outlive its command
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
