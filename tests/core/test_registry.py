"""Registries, plugin discovery through entry points, and building components."""

from __future__ import annotations

import importlib.metadata

import pytest

from protsteps import BuildContext
from protsteps.errors import (
    CompositionError,
    ConfigError,
    DuplicateComponentError,
    UnknownComponentError,
)
from protsteps.registry import Catalog, PluginFailure

from . import plugins_for_tests as p


class FakeDistribution:
    """Stands in for an installed package, as pluggy's own tests do."""

    def __init__(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        self.metadata = {"name": name}
        self.version = version
        ours = [importlib.metadata.EntryPoint(n, value, "protsteps") for n, value in entry_points.items()]
        # an entry point of another group, which discovery must ignore
        self.entry_points = (*ours, importlib.metadata.EntryPoint("other", "os:path", "console_scripts"))

    @property
    def name(self) -> str:
        return self.metadata["name"]


@pytest.fixture
def fake_distributions(monkeypatch):
    def install(*dists: FakeDistribution) -> None:
        monkeypatch.setattr(importlib.metadata, "distributions", lambda: list(dists))

    return install


def test_entry_points_are_discovered_with_plugin_and_version(fake_distributions):
    fake_distributions(
        FakeDistribution("protsteps-alpha", "1.2.3", {"alpha": "tests.core.plugins_for_tests:alpha"})
    )
    catalog = Catalog.discover()
    entry = catalog.get("encoder", "linear")
    assert (entry.plugin, entry.version) == ("alpha", "1.2.3")
    assert entry.config is p.LinearConfig
    assert catalog.registry("task").names() == ["dihedral", "distance"]
    assert catalog.failures == []


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(fake_distributions):
    fake_distributions(
        FakeDistribution("broken", "0.1", {"broken": "protsteps_no_such_module_xyz.hooks"}),
        FakeDistribution("protsteps-alpha", "1.0", {"alpha": "tests.core.plugins_for_tests:alpha"}),
    )
    catalog = Catalog.discover()
    assert "linear" in catalog.registry("encoder")
    assert [f.plugin for f in catalog.failures] == ["broken"]
    assert "protsteps_no_such_module_xyz" in catalog.failures[0].error
    assert "ModuleNotFoundError" in str(catalog.failures[0])


def test_a_hook_that_raises_is_reported_and_the_others_load():
    catalog = Catalog.from_plugins({"alpha": p.alpha, "broken": p.BrokenHookPlugin()})
    assert catalog.registry("encoder").names() == ["linear"]
    assert len(catalog.failures) == 1
    assert catalog.failures[0].plugin == "broken"
    assert "cannot find my weights" in catalog.failures[0].error


def test_duplicate_names_name_both_plugins_and_leave_the_other_names_usable():
    catalog = Catalog.from_plugins({"alpha": p.alpha, "beta": p.beta})
    with pytest.raises(DuplicateComponentError) as err:
        catalog.get("encoder", "linear")
    message = str(err.value)
    assert "encoder 'linear' is registered twice" in message
    assert "plugin 'alpha'" in message and "plugin 'beta'" in message
    assert [str(c) for c in catalog.conflicts] == [message]
    # neither claim wins, and nothing else is affected
    assert "linear" not in [e.name for e in catalog.entries("encoder")]
    assert catalog.get("scheme", "joint").plugin == "alpha"
    # registering a taken name directly is refused at once
    with pytest.raises(DuplicateComponentError, match="registered twice"):
        catalog.registry("scheme").add(catalog.get("scheme", "joint"))


def test_unknown_name_lists_known_names_and_closest_match():
    catalog = Catalog.from_plugins({"alpha": p.alpha, "gamma": p.gamma})
    with pytest.raises(UnknownComponentError) as err:
        catalog.get("encoder", "linaer")
    message = str(err.value)
    assert "unknown encoder 'linaer'" in message
    assert "Did you mean 'linear'?" in message
    assert "gamma, linear" in message


def test_unknown_kind_is_an_error():
    catalog = Catalog.from_plugins({"alpha": p.alpha})
    with pytest.raises(UnknownComponentError, match="Kinds: featurizer, encoder, task, teacher, scheme"):
        catalog.get("decoder", "linear")
    with pytest.raises(UnknownComponentError, match=r"unknown kind 'encoders'\. Did you mean 'encoder'"):
        catalog.get("encoders", "linear")


def test_unknown_names_match_closest_ignoring_case_and_mention_failed_plugins():
    catalog = Catalog.from_plugins({"alpha": p.alpha, "gamma": p.gamma})
    with pytest.raises(UnknownComponentError, match="Did you mean 'linear'"):
        catalog.get("encoder", "LINEAR")
    catalog.failures.append(PluginFailure("broken", "ImportError: no module named 'x'"))
    with pytest.raises(
        UnknownComponentError, match=r"Plugins that failed to load \(`protsteps plugins` says why\): broken"
    ):
        catalog.get("encoder", "from_broken")


def test_build_validates_config_and_calls_the_factory():
    catalog = Catalog.from_plugins({"alpha": p.alpha})
    encoder = catalog.build("encoder", "linear", hidden_dim=8, activation="none")
    assert isinstance(encoder, p.LinearEncoder)
    assert encoder.out_dim == 8 and encoder.config.activation == "none"
    with pytest.raises(ConfigError, match="unknown key 'hidden' in \\[encoder\\] \\(linear\\)"):
        catalog.build("encoder", "linear", hidden=8)
    with pytest.raises(ConfigError, match="hidden_dim: expected an integer, got str"):
        catalog.build("encoder", "linear", hidden_dim="eight")


def test_build_refuses_a_composition_missing_batch_attributes():
    catalog = Catalog.from_plugins({"alpha": p.alpha})
    context = BuildContext(provides=frozenset({"residue_type"}), featurizer="sequence_only")
    with pytest.raises(CompositionError) as err:
        catalog.build("encoder", "linear", context=context)
    assert "encoder 'linear' needs pos" in str(err.value)
    assert "featurizer 'sequence_only'" in str(err.value)
    # provided: builds
    ok = BuildContext(provides=frozenset({"residue_type", "pos"}))
    assert catalog.build("encoder", "linear", context=ok).out_dim == 16


def test_a_component_with_an_unusable_config_class_is_a_plugin_failure():
    import dataclasses

    from protsteps import Component, hookimpl

    @dataclasses.dataclass
    class NoDefault:
        width: int

    class Bad:
        @hookimpl
        def protsteps_register_encoders(self):
            return [Component("bad", p.LinearEncoder, NoDefault, "no default")]

    catalog = Catalog.from_plugins({"bad": Bad(), "alpha": p.alpha})
    assert "bad" not in catalog.registry("encoder")
    assert "config field 'width' has no default" in catalog.failures[0].error


def test_entries_serialise_with_their_config_schema():
    catalog = Catalog.from_plugins({"alpha": p.alpha})
    record = catalog.get("encoder", "linear").as_json()
    assert record["kind"] == "encoder" and record["plugin"] == "alpha"
    fields = {f["name"]: f for f in record["config"]}
    assert fields["hidden_dim"] == {
        "name": "hidden_dim",
        "type": "int",
        "default": 16,
        "help": "Width of the embedding.",
    }
    assert fields["activation"]["choices"] == ["none", "relu"]
    assert fields["weights"]["type"] == "str | None"
    assert fields["layers"]["default"] == [1, 2]
