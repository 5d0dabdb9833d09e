"""Run configuration files: sections, overrides and round trips."""

from __future__ import annotations

import pytest
import tomllib

from protsteps.errors import ConfigError, UnknownComponentError
from protsteps.registry import Catalog
from protsteps.runconfig import RunConfig, load_run_config

from . import plugins_for_tests as p

RUN_FILE = """
[featurizer]
name = "residue_graph"
hidden_dim = 4

[encoder]
name = "linear"
hidden_dim = 32
activation = "none"
layers = [3, 4]

[[tasks]]
name = "distance"
weight = 2.0

[[tasks]]
name = "dihedral"

[teacher]
name = "none"

[scheme]
name = "joint"

[train]
epochs = 3
lr = 0.01

[data]
inputs = ["a.pdb", "folder/"]
"""


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_plugins({"alpha": p.alpha, "gamma": p.gamma})


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(RUN_FILE)
    return path


def test_a_run_file_is_validated_into_component_configs(catalog, run_file):
    config = load_run_config(run_file, catalog)
    assert config.encoder.name == "linear"
    assert config.encoder.config == p.LinearConfig(hidden_dim=32, activation="none", layers=[3, 4])
    assert [(t.name, t.weight) for t in config.tasks] == [("distance", 2.0), ("dihedral", 1.0)]
    assert config.teacher.name == "none" and config.teacher.config is None
    assert config.train.epochs == 3 and config.train.lr == 0.01
    assert config.data.inputs == ["a.pdb", "folder/"]


def test_load_dump_load_gives_the_same_config(catalog, run_file, tmp_path):
    config = load_run_config(run_file, catalog, sets=["encoder.weights=w.pt", "tasks.dihedral.weight=0.5"])
    dumped = tmp_path / "resolved.toml"
    dumped.write_text(config.dumps())
    again = load_run_config(dumped, catalog)
    assert again == config
    assert again.encoder.config.weights == "w.pt"
    assert RunConfig.from_dict(tomllib.loads(config.dumps()), catalog) == config


def test_cli_options_then_set_override_the_file(catalog, run_file):
    config = load_run_config(
        run_file,
        catalog,
        components={"encoder": "gamma", "scheme": None},
        tasks=["dihedral"],
        train={"epochs": 7, "lr": None},
        sets=["encoder.hidden_dim=8", "train.epochs=9", "tasks.0.weight=3"],
    )
    # a new encoder drops the file's settings for the old one; --set applies after options
    assert config.encoder.name == "gamma"
    assert config.encoder.config == p.LinearConfig(hidden_dim=8)
    assert [(t.name, t.weight) for t in config.tasks] == [("dihedral", 3.0)]
    assert config.train.epochs == 9 and config.train.lr == 0.01
    assert config.scheme.name == "joint"


def test_the_same_encoder_named_again_keeps_its_settings(catalog, run_file):
    config = load_run_config(run_file, catalog, components={"encoder": "linear"})
    assert config.encoder.config.hidden_dim == 32


@pytest.mark.parametrize(
    ("sets", "error", "message"),
    [
        (
            ["encoder.hiden_dim=3"],
            ConfigError,
            "unknown key 'hiden_dim' in [encoder] (linear) (did you mean 'hidden_dim'?); allowed keys: hidden_dim, activation, scale, weights, layers",
        ),
        (["train.epochs=many"], ConfigError, "[train] epochs: expected an integer, got str 'many'"),
        (["trian.epochs=3"], ConfigError, "unknown section 'trian' (did you mean 'train'?)"),
        (["tasks.contact.weight=1"], ConfigError, "no task named 'contact' (tasks: distance, dihedral)"),
        (["tasks.distance.foo=1"], ConfigError, "unknown key 'foo' in [[tasks]] #0 (distance)"),
        (["encoder.name=lineer"], UnknownComponentError, "unknown encoder 'lineer'. Did you mean 'linear'?"),
        (["teacher.model=x"], ConfigError, "[teacher]: teacher 'none' takes no settings, got model"),
        (["epochs"], ConfigError, "expected section.key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(catalog, run_file, sets, error, message):
    with pytest.raises(error) as err:
        load_run_config(run_file, catalog, sets=sets)
    assert message in str(err.value)


def test_unknown_sections_and_missing_files_are_clear_errors(catalog, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[encodr]\nname = 'linear'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[encodr\] \(did you mean \[encoder\]\?\)"):
        load_run_config(bad, catalog)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.toml", catalog)
    broken = tmp_path / "broken.toml"
    broken.write_text("[encoder\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_run_config(broken, catalog)
