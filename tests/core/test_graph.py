"""ProteinGraph and Batch: shapes, collation and device moves."""

from __future__ import annotations

import pytest
import torch

from protsteps import ProteinGraph, collate
from protsteps.graph import residue_types


def make_graph(n: int, edges: list[tuple[int, int]], name: str, attr_width: int = 2) -> ProteinGraph:
    pos = torch.arange(n * 3, dtype=torch.float32).view(n, 3)
    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    vec = pos[edge_index[1]] - pos[edge_index[0]]
    dist = vec.norm(dim=-1)
    return ProteinGraph(
        source=f"{name}.pdb",
        chain_id="A",
        sequence="ACDEFGHIKLMNPQRSTVWY"[:n],
        residue_type=residue_types("ACDEFGHIKLMNPQRSTVWY"[:n]),
        residue_number=torch.arange(1, n + 1),
        pos=pos,
        backbone=torch.zeros(n, 4, 3),
        backbone_mask=torch.ones(n, 4, dtype=torch.bool),
        dihedrals=torch.zeros(n, 3),
        dihedral_mask=torch.ones(n, 3, dtype=torch.bool),
        edge_index=edge_index,
        edge_distance=dist,
        edge_vector=vec / dist.unsqueeze(-1),
        edge_attr=torch.ones(len(edges), attr_width),
        node_attr=torch.zeros(n, 0),
    )


def test_collate_offsets_edges_and_builds_batch_vectors():
    a = make_graph(3, [(0, 1), (1, 0)], "a")
    b = make_graph(4, [(0, 3), (2, 1), (3, 0)], "b")
    batch = collate([a, b])
    assert batch.num_graphs == 2 and batch.num_nodes == 7 and batch.num_edges == 5
    assert batch.batch.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert batch.ptr.tolist() == [0, 3, 7]
    assert batch.edge_ptr.tolist() == [0, 2, 5]
    assert batch.edge_index.tolist() == [[0, 1, 3, 5, 6], [1, 0, 6, 4, 3]]
    assert batch.lengths.tolist() == [3, 4]
    assert batch.sources == ["a.pdb", "b.pdb"]
    # edges still join the same residues' coordinates after offsetting
    torch.testing.assert_close(
        (batch.pos[batch.edge_index[1]] - batch.pos[batch.edge_index[0]]).norm(dim=-1), batch.edge_distance
    )
    assert torch.equal(batch.dihedral_input_mask, batch.dihedral_mask)
    assert batch.dihedral_input_mask.data_ptr() != batch.dihedral_mask.data_ptr()


def test_collate_refuses_mixed_feature_widths_and_empty_lists():
    with pytest.raises(ValueError, match="edge_attr widths differ"):
        collate([make_graph(3, [(0, 1)], "a", 2), make_graph(3, [(0, 1)], "b", 5)])
    with pytest.raises(ValueError, match="empty list"):
        collate([])


def test_graph_shapes_are_validated():
    g = make_graph(3, [(0, 1)], "a")
    data = g.to_dict()
    data["pos"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="pos has shape \\(2, 3\\), expected \\(3, 3\\)"):
        ProteinGraph.from_dict(data)


def test_to_moves_tensors_and_casts_floats():
    batch = collate([make_graph(3, [(0, 1)], "a")]).to("cpu", dtype=torch.float64)
    assert batch.pos.dtype == torch.float64 and batch.edge_index.dtype == torch.long
    assert batch.dihedral_mask.dtype == torch.bool


def test_residue_types_map_unknown_to_x():
    assert residue_types("AXBZ").tolist() == [0, 20, 20, 20]


def test_a_packed_batch_unpacks_to_the_same_batch(structures_dir):
    """What a DataLoader worker sends (one buffer) is the batch itself, field for field, on
    real chains; the unpacked tensors are separate, writable views."""
    import dataclasses

    import protsteps
    from protsteps.graph import PackedBatch, collate_packed

    graphs = [
        *protsteps.featurize(structures_dir / "masif" / "1A2K_C.pdb.gz"),
        *protsteps.featurize(structures_dir / "biopython" / "1A8O.cif"),
    ]
    batch = collate(graphs)
    packed = collate_packed(graphs)
    assert isinstance(packed, PackedBatch) and packed.buffer.dtype == torch.uint8
    unpacked = packed.unpack()
    for field in dataclasses.fields(batch):
        ours, theirs = getattr(unpacked, field.name), getattr(batch, field.name)
        if isinstance(theirs, torch.Tensor):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, field.name
            assert torch.equal(ours, theirs), field.name
        else:
            assert ours == theirs, field.name
    unpacked.dihedral_input_mask[:] = False  # writing one field leaves the others alone
    assert torch.equal(unpacked.dihedral_mask, batch.dihedral_mask)
    # a batch of one chain without edges' attributes packs too
    assert torch.equal(collate_packed(graphs[:1]).unpack().pos, graphs[0].pos)
