"""What a component is told about the rest of the composition (BuildContext): the featurizer's
config and the widths and irreps of edge_attr / node_attr for encoders, the composed tasks
for schemes; the same context again when encoder.pt is loaded."""

from __future__ import annotations

import dataclasses
import importlib.metadata

import pytest
import torch

from protsteps import BuildContext, Component, EncoderOutput, Featurizer, Scheme, hookimpl
from protsteps.errors import CompositionError
from protsteps.export import encoder_record, load_encoder
from protsteps.model import compose, featurizer_context
from protsteps.registry import ENTRY_POINT_GROUP, Catalog
from protsteps.runconfig import load_run_config

SEEN: dict[str, list[BuildContext]] = {"encoder": [], "scheme": []}


@dataclasses.dataclass
class _NoSettings:
    pass


class EdgeReader(torch.nn.Module):
    """An encoder with a layer sized by the featurizer's edge_attr width."""

    def __init__(self, config: _NoSettings, context: BuildContext) -> None:
        super().__init__()
        SEEN["encoder"].append(context)
        if context.edge_attr_dim is None:
            raise CompositionError("encoder 'edge_reader' needs the width of edge_attr")
        self.edges = torch.nn.Linear(max(context.edge_attr_dim, 1), 8)
        self.out_dim = 8

    def forward(self, batch, teacher_features=None) -> EncoderOutput:  # pragma: no cover - not run
        raise NotImplementedError


class TaskListScheme(Scheme):
    def __init__(self, config: _NoSettings, context: BuildContext) -> None:
        SEEN["scheme"].append(context)

    def setup(self, setup):  # pragma: no cover - not run
        pass

    def step(self, batch, generator=None):  # pragma: no cover - not run
        return {}

    def state_dict(self):  # pragma: no cover - not run
        return {}

    def load_state_dict(self, state):  # pragma: no cover - not run
        pass


class _ProbePlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        return [Component("edge_reader", EdgeReader, _NoSettings, "Sized by edge_attr.")]

    @hookimpl
    def protsteps_register_schemes(self):
        return [Component("task_list", TaskListScheme, _NoSettings, "Records its context.")]


@pytest.fixture
def catalog() -> Catalog:
    SEEN["encoder"].clear()
    SEEN["scheme"].clear()
    plugins: dict[str, object] = {
        ep.name: ep.load() for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    }
    plugins["probe"] = _ProbePlugin()
    return Catalog.from_plugins(plugins)


def test_encoders_see_the_featurizer_and_schemes_the_tasks(catalog, tmp_path):
    config = load_run_config(
        None,
        catalog,
        components={"encoder": "edge_reader", "teacher": "none", "scheme": "task_list"},
        tasks=["distance", "dihedral"],
        sets=["featurizer.rbf=8", "featurizer.sh_lmax=1", "tasks.dihedral.weight=0.5"],
    )
    composition = compose(config, catalog)
    (encoder_context,) = SEEN["encoder"]
    assert encoder_context.featurizer == "residue_graph"
    assert encoder_context.featurizer_config is config.featurizer.config
    assert encoder_context.featurizer_config.rbf == 8
    assert encoder_context.edge_attr_irreps == "8x0e + 1x0e + 1x1o"
    assert encoder_context.edge_attr_dim == 12  # 8 radial + 1 + 3 harmonics
    assert (encoder_context.node_attr_irreps, encoder_context.node_attr_dim) == ("", 0)
    assert composition.model.encoder.edges.in_features == 12
    (scheme_context,) = SEEN["scheme"]
    assert dict(scheme_context.tasks) == {"distance": 1.0, "dihedral": 0.5}
    assert list(scheme_context.tasks) == ["distance", "dihedral"]
    assert scheme_context.encoder == "edge_reader" and scheme_context.encoder_dim == 8
    assert scheme_context.edge_attr_dim == 12
    assert encoder_context.tasks is None  # only schemes are built after the tasks

    # encoder.pt rebuilds the encoder in the same context, so its weights fit
    path = tmp_path / "encoder.pt"
    torch.save(encoder_record(composition.model.encoder, composition.config, None), path)
    loaded, _ = load_encoder(path, catalog)
    assert SEEN["encoder"][-1].edge_attr_dim == 12 and SEEN["encoder"][-1].featurizer_config.rbf == 8
    torch.testing.assert_close(loaded.edges.weight, composition.model.encoder.edges.weight)


def test_without_edge_features_the_widths_are_zero(catalog):
    config = load_run_config(
        None,
        catalog,
        components={"encoder": "edge_reader", "teacher": "none", "scheme": "task_list"},
        sets=["featurizer.rbf=0"],
    )
    compose(config, catalog)
    (context,) = SEEN["encoder"]
    assert (context.edge_attr_irreps, context.edge_attr_dim) == ("", 0)


class _Declared(Featurizer):
    provides = frozenset({"residue_type", "edge_attr", "node_attr"})
    edge_attr_irreps = "4x0e + 2x1o"
    node_attr_irreps = None  # unknown transformation
    node_attr_dim = 5

    def __call__(self, chain):  # pragma: no cover - not run
        raise NotImplementedError


class _Unknown(Featurizer):
    provides = frozenset({"edge_attr"})
    edge_attr_irreps = None

    def __call__(self, chain):  # pragma: no cover - not run
        raise NotImplementedError


class _Malformed(_Unknown):
    edge_attr_irreps = "16 scalars"


def test_widths_come_from_the_featurizer_or_its_irreps():
    context = featurizer_context("declared", _Declared(), None)
    assert (context.edge_attr_irreps, context.edge_attr_dim) == ("4x0e + 2x1o", 10)
    assert (context.node_attr_irreps, context.node_attr_dim) == (None, 5)
    assert context.provides == _Declared.provides and context.featurizer == "declared"
    unknown = featurizer_context("unknown", _Unknown(), None)
    assert (unknown.edge_attr_irreps, unknown.edge_attr_dim) == (None, None)
    with pytest.raises(CompositionError, match=r"edge_attr_irreps '16 scalars' is not an e3nn irreps string"):
        featurizer_context("malformed", _Malformed(), None)
