"""Encoders and tasks declare what they need from a batch; bad compositions fail at build."""

from __future__ import annotations

import json

import pytest

import protsteps
from protsteps import BuildContext
from protsteps.cli import main
from protsteps.errors import CompositionError
from protsteps.model import compose
from protsteps.registry import default_catalog
from protsteps.runconfig import RunConfig


def test_declared_requirements() -> None:
    catalog = default_catalog()
    assert catalog.get("encoder", "gin").factory.requires == {
        "residue_type",
        "dihedrals",
        "edge_index",
        "edge_distance",
    }
    assert {"edge_vector", "edge_index", "edge_distance", "dihedrals"} <= catalog.get(
        "encoder", "equivariant"
    ).factory.requires
    assert catalog.get("task", "distance").factory.requires == {"pos"}
    assert catalog.get("task", "dihedral").factory.requires == {"dihedrals"}


def test_equivariant_encoder_without_edge_vectors_fails_at_build() -> None:
    context = BuildContext(
        provides=frozenset({"residue_type", "pos", "dihedrals", "edge_index", "edge_distance"}),
        featurizer="ca_trace",
    )
    with pytest.raises(CompositionError) as caught:
        protsteps.build("encoder", "equivariant", context=context)
    message = str(caught.value)
    assert "encoder 'equivariant' needs edge_vector" in message
    assert "featurizer 'ca_trace' does not provide" in message
    assert "edge_distance" in message  # it lists what is provided
    protsteps.build("encoder", "gin", context=context)  # gin needs no edge vectors


def test_tasks_without_their_inputs_fail_at_build() -> None:
    no_angles = BuildContext(
        provides=frozenset({"residue_type", "pos", "edge_index", "edge_distance"}),
        featurizer="no_angles",
        encoder_dim=8,
    )
    with pytest.raises(CompositionError, match="task 'dihedral' needs dihedrals from each batch"):
        protsteps.build("task", "dihedral", context=no_angles)
    protsteps.build("task", "distance", context=no_angles)
    no_positions = BuildContext(provides=frozenset({"dihedrals"}), featurizer="angles_only", encoder_dim=8)
    with pytest.raises(CompositionError, match="task 'distance' needs pos"):
        protsteps.build("task", "distance", context=no_positions)


def test_residue_graph_without_edges_cannot_feed_an_encoder() -> None:
    featurizer = protsteps.build("featurizer", "residue_graph", radius=0.0)
    context = BuildContext(provides=featurizer.provides, featurizer="residue_graph")
    for name in ("gin", "equivariant"):
        with pytest.raises(CompositionError, match=f"encoder '{name}' needs edge_distance, edge_index"):
            protsteps.build("encoder", name, context=context)
    full = protsteps.build("featurizer", "residue_graph")
    for name in ("gin", "equivariant"):
        protsteps.build("encoder", name, context=BuildContext(provides=full.provides))


def test_a_run_config_composes_both_encoders_with_both_tasks() -> None:
    catalog = default_catalog()
    for encoder in ("gin", "equivariant"):
        config = RunConfig.from_dict(
            {
                "encoder": {"name": encoder, "angle_basis": 8},
                "tasks": [{"name": "distance", "num_pairs": 32}, {"name": "dihedral", "weight": 0.5}],
                "teacher": {"name": "none"},
            },
            catalog,
        )
        composition = compose(config, catalog)
        model = composition.model
        assert model.encoder.out_dim == model.tasks["distance"].head[0].in_features // 2
        assert model.tasks["distance"].config.num_pairs == 32
        assert (
            RunConfig.from_dict(composition.config.to_dict(), catalog).to_dict()
            == composition.config.to_dict()
        )


def test_a_run_config_with_an_edgeless_graph_fails_when_composed() -> None:
    catalog = default_catalog()
    config = RunConfig.from_dict(
        {
            "featurizer": {"name": "residue_graph", "radius": 0.0},
            "encoder": {"name": "equivariant"},
            "teacher": {"name": "none"},
        },
        catalog,
    )
    with pytest.raises(CompositionError, match="encoder 'equivariant' needs"):
        compose(config, catalog)


def test_plugins_are_listed_and_shown_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    listed = {(e["kind"], e["name"]): e for e in json.loads(capsys.readouterr().out)}
    for key in (("encoder", "gin"), ("encoder", "equivariant"), ("task", "distance"), ("task", "dihedral")):
        assert key in listed
    gin_fields = {f["name"]: f for f in listed[("encoder", "gin")]["config"]}
    assert gin_fields["activation"]["choices"] == ["none", "relu", "gelu", "silu"]
    assert gin_fields["hidden_dim"]["default"] == 256
    assert main(["plugins", "show", "task", "distance"]) == 0
    assert "num_pairs" in capsys.readouterr().out
