"""PyTorch Geometric interop on real structures: round trips, PyG layers on protsteps graphs,
and a PyG model as a protsteps encoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import protsteps
from protsteps.components import BuildContext, EncoderOutput
from protsteps.errors import ProtstepsError

pyg_data = pytest.importorskip("torch_geometric.data", reason="needs protsteps[pyg]")
from torch_geometric.nn import GCNConv, global_mean_pool  # noqa: E402

NAMES = ("masif/1A2K_AB.pdb.gz", "biopython/1A8O.cif", "db55_unbound/1A2K_r_u.pdb.gz")


@pytest.fixture(scope="module")
def graphs(structures_dir):
    return [graph for name in NAMES for graph in protsteps.featurize(structures_dir / name)]


def _assert_same(a: protsteps.ProteinGraph, b: protsteps.ProteinGraph) -> None:
    for field in dataclasses.fields(protsteps.ProteinGraph):
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, torch.Tensor):
            assert left.dtype == right.dtype and torch.equal(left, right), field.name
        else:
            assert left == right, field.name


def test_round_trip_keeps_every_field(graphs):
    assert len(graphs) >= 4
    for graph in graphs:
        data = graph.to_pyg()
        assert isinstance(data, pyg_data.Data)
        assert data.num_nodes == graph.num_nodes and data.num_edges == graph.num_edges
        assert data.x.shape == (graph.num_nodes, 21 + graph.node_attr.shape[1])
        assert torch.equal(data.x[:, :21].argmax(1), graph.residue_type)
        data.validate(raise_on_error=True)
        _assert_same(protsteps.ProteinGraph.from_pyg(data), graph)


def test_a_pyg_layer_runs_on_protsteps_graphs_and_batches(graphs):
    torch.manual_seed(0)
    layer = GCNConv(21, 8)
    singles = torch.cat(
        [
            global_mean_pool(layer(d.x, d.edge_index), torch.zeros(d.num_nodes, dtype=torch.long))
            for d in (g.to_pyg() for g in graphs)
        ]
    )
    batch = protsteps.collate(graphs).to_pyg()
    assert isinstance(batch, pyg_data.Batch) and batch.num_graphs == len(graphs)
    assert torch.equal(batch.ptr, protsteps.collate(graphs).ptr)
    pooled = global_mean_pool(layer(batch.x, batch.edge_index), batch.batch)
    assert torch.allclose(pooled, singles, atol=1e-5)
    assert batch.chain_id == [g.chain_id for g in graphs]
    for graph, data in zip(graphs, batch.to_data_list(), strict=True):
        _assert_same(protsteps.ProteinGraph.from_pyg(data), graph)


def test_from_pyg_fills_what_a_foreign_data_lacks(graphs):
    graph = graphs[0]
    foreign = pyg_data.Data(pos=graph.pos, edge_index=graph.edge_index, residue_type=graph.residue_type)
    made = protsteps.ProteinGraph.from_pyg(foreign)
    assert made.sequence == graph.sequence
    assert torch.allclose(made.edge_distance, graph.edge_distance, atol=1e-5)
    assert torch.allclose(made.edge_vector, graph.edge_vector, atol=1e-5)
    assert made.backbone_mask[:, 1].all() and not made.backbone_mask[:, [0, 2, 3]].any()
    assert not made.dihedral_mask.any()
    with pytest.raises(ProtstepsError, match="lacks edge_index"):
        protsteps.ProteinGraph.from_pyg(pyg_data.Data(pos=graph.pos, residue_type=graph.residue_type))
    with pytest.raises(ProtstepsError, match="neither residue_type nor sequence"):
        protsteps.ProteinGraph.from_pyg(pyg_data.Data(pos=graph.pos, edge_index=graph.edge_index))
    with pytest.raises(ProtstepsError, match="a PyG Batch"):
        protsteps.ProteinGraph.from_pyg(protsteps.collate(graphs[:2]).to_pyg())


class GCNEncoder(protsteps.Encoder):
    """A PyG model as a protsteps encoder: what docs/pyg.md shows."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.first, self.second = GCNConv(21, hidden), GCNConv(hidden, hidden)
        self.out_dim = hidden

    def forward(self, batch, teacher_features=None) -> EncoderOutput:
        # a protsteps Batch is laid out as PyG's: edge_index (source row 0) and batch as they are
        x = torch.nn.functional.one_hot(batch.residue_type, 21).float()
        h = self.first(x, batch.edge_index).relu()
        node = self.second(h, batch.edge_index)
        return EncoderOutput(node=node, graph=global_mean_pool(node, batch.batch))


def test_a_pyg_model_as_an_encoder_trains_with_the_distance_task(graphs):
    torch.manual_seed(0)
    encoder = GCNEncoder(16)
    task = protsteps.build("task", "distance", context=BuildContext(encoder_dim=16))
    optimiser = torch.optim.Adam([*encoder.parameters(), *task.parameters()], lr=1e-2)
    batch = protsteps.collate(graphs)
    losses = []
    for _ in range(15):
        corrupted, state = task.corrupt(batch, torch.Generator().manual_seed(0))
        loss = task(corrupted, encoder(corrupted), state).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
