"""Changing a component's ``name`` (issue 13, deliverable 8): the old component's settings
never pass silently to the new one. Settings dropped by ``--set section.name=...`` or by a
run file that renames a preset's component are warned about one by one; a section that
names one component but holds another's whole settings (an edited ``config.toml``) is
refused when the new one does not take them, and warned about when it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from protsteps.cli import main
from protsteps.errors import ConfigError
from protsteps.registry import Catalog, default_catalog
from protsteps.runconfig import RunConfig, load_run_config, merge_raw

from . import plugins_for_tests as p


def test_set_name_over_a_run_file_warns_about_every_dropped_setting(tmp_path):
    run_file = tmp_path / "run.toml"
    run_file.write_text('[encoder]\nname = "gin"\nhidden_dim = 16\nnum_layers = 3\n')
    config = load_run_config(run_file, default_catalog(), sets=["encoder.name=equivariant"])
    assert config.encoder.name == "equivariant" and config.encoder.config.num_layers == 3  # its default
    assert config.notes == [
        "warning: --set encoder.name=equivariant replaces encoder 'gin': its settings (hidden_dim = 16, "
        "num_layers = 3) are not used, since they were gin's; give equivariant's own with --set "
        "encoder.KEY=VALUE"
    ]
    # settings given after the new name are the new component's, without a warning
    config = load_run_config(
        None, default_catalog(), sets=["encoder.name=equivariant", "encoder.num_layers=4"]
    )
    assert config.encoder.config.num_layers == 4 and config.notes == []
    # the same name again changes nothing and drops nothing
    config = load_run_config(run_file, default_catalog(), sets=["encoder.name=gin"])
    assert config.encoder.config.hidden_dim == 16 and config.notes == []


def test_the_cli_prints_the_warning(shared_data, tmp_path, capsys):
    run_file = tmp_path / "run.toml"
    run_file.write_text('[encoder]\nname = "gin"\nhidden_dim = 16\n')
    # the warning comes before the run (here refused for its input, a label file, before any work)
    labels = shared_data / "labels" / "scop2_class_chains.tsv"
    args = ["pretrain", str(labels), "--config", str(run_file), "--set", "encoder.name=equivariant"]
    assert main([*args, "--out", str(tmp_path / "run"), "--teacher", "none"]) == 2
    err = capsys.readouterr().err
    assert (
        "warning: --set encoder.name=equivariant replaces encoder 'gin': its settings (hidden_dim = 16)"
        in err
    )
    assert "this looks like a label file" in err


def test_a_run_file_that_renames_a_presets_component_warns(tmp_path):
    preset = {"encoder": {"name": "gin", "hidden_dim": 8, "norm": "none"}, "train": {"epochs": 2}}
    notes: list[str] = []
    merged = merge_raw(preset, {"encoder": {"name": "equivariant", "out_dim": 8}}, notes, "run.toml")
    assert merged["encoder"] == {"name": "equivariant", "out_dim": 8} and merged["train"] == {"epochs": 2}
    assert notes == [
        "warning: [encoder] name = \"equivariant\" in run.toml replaces encoder 'gin': its settings "
        "(hidden_dim = 8, norm = 'none') are not used, since they were gin's; give equivariant's own "
        "with --set encoder.KEY=VALUE"
    ]
    # the same component: settings merge, nothing to warn about
    notes.clear()
    assert (
        merge_raw(preset, {"encoder": {"name": "gin", "hidden_dim": 4}}, notes)["encoder"]["norm"] == "none"
    )
    assert notes == []


def test_an_edited_name_over_another_components_settings_is_refused_naming_both():
    catalog = default_catalog()
    raw = load_run_config(None, catalog).to_dict()  # what config.toml holds: every setting
    raw["encoder"]["name"] = "equivariant"
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(raw, catalog)
    message = str(caught.value)
    assert message.startswith(
        "[encoder] names encoder 'equivariant' but holds the settings of encoder 'gin' (hidden_dim, "
    )
    assert message.endswith(
        "are not equivariant's): was its name changed? Remove gin's settings from the section, or name gin again"
    )


def test_an_edited_name_whose_component_takes_every_setting_is_warned_about():
    catalog = Catalog.from_plugins({"alpha": p.alpha, "gamma": p.gamma})
    raw = {
        "encoder": {"name": "gamma", "hidden_dim": 32, "activation": "none", "scale": 2.0, "layers": [3]},
        "tasks": [{"name": "distance"}],
        "teacher": {"name": "none"},
        "scheme": {"name": "joint"},
    }
    config = RunConfig.from_dict(raw, catalog)
    assert config.encoder.config.hidden_dim == 32  # taken, as the file says ...
    assert config.notes == [  # ... but not silently
        "warning: [encoder] names encoder 'gamma' but holds every setting of encoder 'linear' (was its "
        "name changed?); gamma takes hidden_dim = 32, activation = 'none', scale = 2.0, layers = [3] as "
        "its own settings: check they mean the same there, or remove them"
    ]
    # a hand-written section with a few settings is the named component's, as always
    raw["encoder"] = {"name": "gamma", "hidden_dim": 32}
    assert RunConfig.from_dict(raw, catalog).notes == []
    # unknown keys are refused as before
    raw["encoder"] = {"name": "gamma", "width": 32}
    with pytest.raises(ConfigError, match="unknown key 'width' in \\[encoder\\] \\(gamma\\)"):
        RunConfig.from_dict(raw, catalog)


def test_the_notes_do_not_change_what_a_config_is(tmp_path: Path):
    catalog = default_catalog()
    a = load_run_config(None, catalog, sets=["encoder.name=equivariant"])
    b = load_run_config(None, catalog, sets=["encoder.hidden_dim=8", "encoder.name=equivariant"])
    assert a == b and b.notes and not a.notes
    assert "notes" not in b.to_dict()
