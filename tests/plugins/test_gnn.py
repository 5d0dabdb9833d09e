"""The gnn plugin: angle encoding, node inputs, the GIN and equivariant encoders."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from e3nn.util.test import assert_equivariant

import protsteps
from protsteps import BuildContext, Catalog, collate
from protsteps.config import from_dict, to_dict
from protsteps.errors import ConfigError
from protsteps.graph import ALPHABET, Batch
from protsteps.scatter import scatter
from protsteps.structure import read_chains
from protsteps_gnn import (
    EquivariantConfig,
    EquivariantEncoder,
    GINConfig,
    GINEncoder,
    GINLayer,
    angle_encoding,
    angle_encoding_width,
)
from protsteps_gnn import hooks as gnn_hooks
from protsteps_gnn.features import NodeInput
from protsteps_gnn.testing import assert_invariant, random_rotation, rigid_motion

# Real structures used here and nowhere in the learning test.
INVARIANCE_FILES = ["db55_unbound/2A1A_l_u.pdb.gz", "biopython/1GBT.cif.gz", "db55_unbound/1AY7_r_u.pdb.gz"]


@pytest.fixture(scope="module")
def batch(structures_dir: Path) -> Batch:
    graphs = []
    for name in ("db55_unbound/1AY7_r_u.pdb.gz", "biopython/1A8O.pdb.gz"):
        graphs += protsteps.featurize(structures_dir / name)
    return collate(graphs)


def build(name: str, teacher_dim: int | None = None, **values: object) -> protsteps.Encoder:
    torch.manual_seed(0)
    catalog = Catalog.from_plugins({"gnn": gnn_hooks})
    return catalog.build("encoder", name, context=BuildContext(teacher_dim=teacher_dim), **values)


# ------------------------------------------------------------------ angle encoding


def test_angle_encoding_layout_and_values() -> None:
    angles = torch.tensor([[0.3, -2.0, 3.1]])
    enc = angle_encoding(angles, torch.ones(1, 3, dtype=torch.bool), num_basis=8)
    assert enc.shape == (1, angle_encoding_width(8)) == (1, 20)
    assert torch.allclose(enc[0, :2], torch.tensor([math.sin(0.3), math.cos(0.3)]))
    assert torch.allclose(enc[0, 10:12], torch.tensor([math.sin(-2.0), math.cos(-2.0)]))
    with_omega = angle_encoding(angles, torch.ones(1, 3, dtype=torch.bool), 8, "phi_psi_omega")
    assert with_omega.shape == (1, 30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_angle_basis_is_the_sum_of_three_gaussian_images_bit_for_bit(dtype) -> None:
    # the images alpha - 2π, alpha, alpha + 2π are computed in one pass: the same values as
    # each image's Gaussians computed alone and added in that order
    from protsteps_gnn.features import _gaussian_basis

    g = torch.Generator().manual_seed(3)
    dihedrals = (torch.rand(500, 3, generator=g, dtype=torch.float64) * 8 - 4).to(dtype)
    dihedrals[:3] = torch.tensor([math.pi, -math.pi, 0.0], dtype=dtype)
    mask = torch.ones(500, 3, dtype=torch.bool)
    enc = angle_encoding(dihedrals, mask, num_basis=16)
    alpha = torch.remainder(dihedrals[:, :2] + math.pi, 2 * math.pi) - math.pi
    step = 2 * math.pi / 16
    images = [
        _gaussian_basis(alpha + s, -math.pi, math.pi - step, 16) for s in (-2 * math.pi, 0.0, 2 * math.pi)
    ]
    expected = images[0] + images[1] + images[2]
    assert torch.equal(enc.view(500, 2, 18)[..., 2:], expected)


def test_angle_encoding_is_periodic_and_continuous_across_pi() -> None:
    mask = torch.ones(4, 3, dtype=torch.bool)
    angles = torch.tensor([[math.pi - 1e-5] * 3, [-math.pi + 1e-5] * 3, [1.0] * 3, [1.0 + 2 * math.pi] * 3])
    enc = angle_encoding(angles, mask, num_basis=12)
    assert torch.allclose(enc[0], enc[1], atol=1e-3)
    assert torch.allclose(enc[2], enc[3], atol=1e-5)


def test_every_basis_function_fires_for_some_angle() -> None:
    # The released code's inputs (degrees/180) never reached most of its centres.
    grid = torch.linspace(-math.pi, math.pi, 2001)[:, None].expand(-1, 3)
    enc = angle_encoding(grid, torch.ones_like(grid, dtype=torch.bool), num_basis=16)
    peaks = enc[:, 2:18].max(dim=0).values
    assert bool((peaks > 0.85).all()), peaks


def test_angle_encoding_is_zero_where_masked() -> None:
    angles = torch.rand(5, 3) * 6 - 3
    mask = torch.tensor([[True, False, True]] * 5)
    enc = angle_encoding(angles, mask, num_basis=4)
    assert torch.count_nonzero(enc[:, 6:12]) == 0
    assert torch.count_nonzero(enc[:, :6]) > 0


# ------------------------------------------------------------------ node inputs


def test_node_input_with_and_without_teacher(batch: Batch) -> None:
    one_hot = NodeInput(None, angle_basis=4)
    x = one_hot(batch)
    assert x.shape == (batch.num_nodes, len(ALPHABET) + 12)
    assert torch.equal(x[:, : len(ALPHABET)].argmax(dim=1), batch.residue_type)
    teacher = NodeInput(7, angle_basis=4)
    features = torch.randn(batch.num_nodes, 7)
    assert torch.equal(teacher(batch, features)[:, :7], features)
    with pytest.raises(ValueError, match="without teacher features"):
        teacher(batch)
    with pytest.raises(ValueError, match=r"expected \[\d+, 7\]"):
        teacher(batch, features[:, :5])
    with pytest.raises(ValueError, match="built without a teacher"):
        one_hot(batch, features)


@pytest.mark.parametrize("name", ["gin", "equivariant"])
def test_masked_angles_do_not_reach_the_encoder(name: str, batch: Batch) -> None:
    encoder = build(name).eval()
    hidden = batch.dihedral_input_mask.clone()
    hidden[5:20] = False
    masked = batch.replace(dihedral_input_mask=hidden)
    scrambled = masked.replace(dihedrals=batch.dihedrals.clone())
    scrambled.dihedrals[5:20] = torch.rand(15, 3) * 6 - 3
    with torch.no_grad():
        reference = encoder(batch).node
        a = encoder(masked).node
        b = encoder(scrambled).node
    assert torch.equal(a, b)
    assert not torch.allclose(a, reference)


# ------------------------------------------------------------------ GIN


def _dense_gin_layer(layer: GINLayer, h: torch.Tensor, batch: Batch, weight: torch.Tensor) -> torch.Tensor:
    """Obviously-right reference: W((1 + eps) h + A h) + b with a dense weighted adjacency."""
    n = h.shape[0]
    adjacency = torch.zeros(n, n, dtype=h.dtype)
    adjacency[batch.edge_index[1], batch.edge_index[0]] = weight
    eps = 0.0 if layer.eps is None else layer.eps
    return layer.linear((1 + eps) * h + adjacency @ h)


@pytest.mark.parametrize(("in_dim", "out_dim", "learn_eps"), [(8, 16, False), (40, 6, True), (12, 12, True)])
def test_gin_layer_matches_dense_reference(batch: Batch, in_dim: int, out_dim: int, learn_eps: bool) -> None:
    # every path (narrow input: row-major weight copy; wide: projected first; equal) against
    # the dense reference, forward and the gradients in h and every parameter
    torch.manual_seed(0)
    layer = GINLayer(in_dim, out_dim, learn_eps)
    if layer.eps is not None:
        layer.eps.data.fill_(-0.3)
    assert layer.project_first == (out_dim < in_dim)
    assert layer.narrow_input == (in_dim < out_dim)
    layer = layer.double()
    weight = 1.0 / (batch.edge_distance.double() ** 2 + 1e-6)
    upstream = torch.randn(batch.num_nodes, out_dim, dtype=torch.float64)
    results = []
    for compute in (
        lambda h: layer(h, batch.edge_index, weight),
        lambda h: _dense_gin_layer(layer, h, batch, weight),
    ):
        h = torch.randn(
            batch.num_nodes, in_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        )
        h.requires_grad_(True)
        out = compute(h)
        results.append((out, torch.autograd.grad((out * upstream).sum(), [h, *layer.parameters()])))
    (got, got_grads), (expected, expected_grads) = results
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("teacher_dim", "values"),
    [(None, {}), (64, {}), (64, to_dict(GINConfig.paper()))],
    ids=["default", "default-teacher", "paper-teacher"],
)
def test_gin_sparse_aggregation_matches_the_gather_scatter_path(
    batch: Batch, monkeypatch: pytest.MonkeyPatch, teacher_dim: int | None, values: dict[str, object]
) -> None:
    # the same weights, outputs and gradients (float32 tolerance) whichever path sums the neighbours
    teacher = None if teacher_dim is None else torch.randn(batch.num_nodes, teacher_dim, requires_grad=True)
    results = []
    for path in ("sparse", "scatter"):
        monkeypatch.setenv("PROTSTEPS_AGGREGATION", path)
        encoder = build("gin", teacher_dim, **values)
        out = encoder(batch, teacher)
        loss = out.node.square().mean() + out.structure.sin().sum()
        inputs = list(encoder.parameters()) + ([] if teacher is None else [teacher])
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        results.append((out.node, out.structure, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][2], results[1][2], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gin_shapes_and_graph_mean(batch: Batch) -> None:
    encoder = build("gin", hidden_dim=32)
    out = encoder(batch)
    assert encoder.out_dim == 32
    assert out.node.shape == (batch.num_nodes, 32) and out.graph.shape == (batch.num_graphs, 32)
    for b in range(batch.num_graphs):
        rows = out.node[batch.ptr[b] : batch.ptr[b + 1]]
        assert torch.allclose(out.graph[b], rows.mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("name", ["gin", "equivariant"])
def test_proteins_of_a_batch_do_not_interact(name: str, structures_dir: Path) -> None:
    graphs = protsteps.featurize(structures_dir / "db55_unbound/1AY7_r_u.pdb.gz")
    graphs += protsteps.featurize(structures_dir / "biopython/1A8O.pdb.gz")
    encoder = build(name).eval()
    with torch.no_grad():
        together = encoder(collate(graphs))
        alone = [encoder(collate([g])) for g in graphs]
    assert torch.allclose(together.graph, torch.cat([a.graph for a in alone]), atol=1e-5)
    assert torch.allclose(together.node, torch.cat([a.node for a in alone]), atol=1e-5)


def test_gin_paper_setting_is_linear_and_detaches_the_first_layer(batch: Batch) -> None:
    teacher_dim = 12
    encoder = build("gin", teacher_dim=teacher_dim, **to_dict(GINConfig.paper()))
    width = teacher_dim + angle_encoding_width(16)
    assert encoder.out_dim == width  # hidden_dim = 0: as wide as the input, identity residual
    t1, t2 = torch.randn(2, batch.num_nodes, teacher_dim)
    mix = encoder(batch, 0.3 * t1 + 0.7 * t2).node
    assert torch.allclose(mix, 0.3 * encoder(batch, t1).node + 0.7 * encoder(batch, t2).node, atol=1e-4)
    # Gradients reach the teacher features only through the residual z = h2 + x.
    features = torch.randn(batch.num_nodes, teacher_dim, requires_grad=True)
    encoder(batch, features).node[:, :teacher_dim].sum().backward()
    assert torch.equal(features.grad, torch.ones_like(features))


def test_gin_default_setting_is_not_linear(batch: Batch) -> None:
    encoder = build("gin", teacher_dim=12)
    t1, t2 = torch.randn(2, batch.num_nodes, 12)
    mix = encoder(batch, 0.3 * t1 + 0.7 * t2).node
    assert not torch.allclose(mix, 0.3 * encoder(batch, t1).node + 0.7 * encoder(batch, t2).node, atol=1e-3)


def test_gin_paper_residual_only_with_a_teacher() -> None:
    paper = GINConfig.paper()
    assert GINEncoder(paper, BuildContext(teacher_dim=None)).residual is None
    assert GINEncoder(paper, BuildContext(teacher_dim=8)).residual is not None
    projected = GINEncoder(GINConfig(hidden_dim=16), BuildContext())
    assert isinstance(projected.residual, torch.nn.Linear)  # widths differ: projection


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_gin_norms_train_and_eval(batch: Batch, norm: str) -> None:
    encoder = build("gin", hidden_dim=16, norm=norm, dropout=0.1, num_layers=3)
    encoder(batch).node.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
    encoder.eval()
    assert torch.isfinite(encoder(batch).node).all()


# ------------------------------------------------------------------ equivariant


def test_equivariant_layers_pass_e3nn_assert_equivariant(batch: Batch) -> None:
    encoder = build("equivariant")
    assert isinstance(encoder, EquivariantEncoder)
    torch.manual_seed(1)
    for layer in encoder.layers:
        x = layer.irreps_in.randn(batch.num_nodes, -1)

        def apply(x: torch.Tensor, vector: torch.Tensor, distance: torch.Tensor, layer=layer) -> torch.Tensor:
            return layer(x, batch.edge_index, vector, distance[:, 0])

        assert_equivariant(
            apply,
            args_in=[x, batch.edge_vector, batch.edge_distance[:, None]],
            irreps_in=[layer.irreps_in, "1o", "0e"],
            irreps_out=[layer.irreps_out],
        )
    # the highest irreps do appear: l = 2 and pseudo-scalars by the last layer
    assert {ir.l for _, ir in encoder.layers[-1].irreps_out} == {0, 1, 2}
    assert "0o" in str(encoder.irreps_out)


def test_assert_equivariant_catches_a_frame_dependent_layer(batch: Batch) -> None:
    layer = build("equivariant").layers[1]
    x = layer.irreps_in.randn(batch.num_nodes, -1)
    # Declaring the edge vectors as invariant means they are not rotated with the rest:
    # the layer then sees a structure in another frame and its output must disagree.
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(
            lambda x, vector: layer(x, batch.edge_index, vector, batch.edge_distance),
            args_in=[x, batch.edge_vector],
            irreps_in=[layer.irreps_in, None],
            irreps_out=[layer.irreps_out],
        )


def test_equivariant_config_validation() -> None:
    with pytest.raises(ConfigError, match="must contain scalars"):
        from_dict(EquivariantConfig, {"hidden_irreps": "8x1o"}, section="[encoder]")
    with pytest.raises(ConfigError, match="not e3nn irreps"):
        from_dict(EquivariantConfig, {"hidden_irreps": "lots of vectors"}, section="[encoder]")
    config = from_dict(EquivariantConfig, {"hidden_irreps": "16x0e + 4x1o", "lmax": 1}, section="[encoder]")
    encoder = EquivariantEncoder(config, BuildContext())
    assert "0o" not in str(encoder.irreps_out)


# ------------------------------------------------------------------ invariance on real structures


def _rotated_chains(path: Path, rotation: torch.Tensor, translation: torch.Tensor) -> list:
    chains = read_chains(path)
    moved = []
    for chain in chains:
        backbone = torch.from_numpy(chain.backbone).double() @ rotation.T + translation
        backbone = torch.where(torch.from_numpy(chain.backbone_mask)[..., None], backbone, 0.0)
        moved.append(dataclasses.replace(chain, backbone=backbone.float().numpy()))
    return chains, moved


@pytest.mark.parametrize("name", ["gin", "equivariant"])
@pytest.mark.parametrize("relative", INVARIANCE_FILES)
def test_embedding_invariant_when_the_structure_is_moved_and_refeaturized(
    name: str, relative: str, structures_dir: Path
) -> None:
    generator = torch.Generator().manual_seed(sum(map(ord, relative)))
    rotation = random_rotation(generator)
    translation = 30.0 * torch.randn(3, generator=generator, dtype=torch.float64)
    featurizer = protsteps.build("featurizer", "residue_graph")
    chains, moved = _rotated_chains(structures_dir / relative, rotation, translation)
    original = collate([featurizer(c) for c in chains])
    rotated = collate([featurizer(c) for c in moved])
    assert torch.equal(original.edge_index, rotated.edge_index)
    assert torch.equal(original.dihedral_mask, rotated.dihedral_mask)
    assert torch.allclose(original.dihedrals, rotated.dihedrals, atol=1e-4)
    assert not torch.allclose(original.pos, rotated.pos, atol=1.0)
    encoder = build(name).eval()
    with torch.no_grad():
        a, b = encoder(original), encoder(rotated)
    assert (a.graph - b.graph).abs().max() < 1e-4
    assert (a.node - b.node).abs().max() < 1e-3


@pytest.mark.parametrize("name", ["gin", "equivariant"])
def test_encoders_run_without_angle_input(name: str, batch: Batch) -> None:
    encoder = build(name, angles="none").eval()
    assert encoder.inputs.out_dim == len(ALPHABET)  # the one-hot residue type alone
    with torch.no_grad():
        out = encoder(batch)
        hidden = encoder(batch.replace(dihedrals=torch.rand_like(batch.dihedrals)))
    assert out.node.shape == (batch.num_nodes, encoder.out_dim)
    assert torch.equal(out.node, hidden.node)  # the angles are not read at all


def test_mirror_images_differ_unless_angles_and_odd_irreps_are_left_out(structures_dir: Path) -> None:
    """Proteins are chiral: the default equivariant encoder tells a structure from its mirror
    image (through the angle input, which changes sign, and the pseudo-scalar channels);
    without both it is E(3)-invariant, as docs/encoders_tasks.md says."""
    mirror = -random_rotation(torch.Generator().manual_seed(11))
    featurizer = protsteps.build("featurizer", "residue_graph")
    chains, moved = _rotated_chains(structures_dir / "db55_unbound/1ATN_l_u.pdb.gz", mirror, torch.zeros(3))
    original = collate([featurizer(c) for c in chains])
    mirrored = collate([featurizer(c) for c in moved])
    # rigid_motion knows what a mirror does to dihedrals
    assert torch.allclose(mirrored.dihedrals, -original.dihedrals, atol=1e-4)
    assert torch.allclose(
        rigid_motion(original, mirror, torch.zeros(3)).dihedrals, mirrored.dihedrals, atol=1e-4
    )

    def difference(**settings: object) -> float:
        encoder = build("equivariant", **settings).eval()
        with torch.no_grad():
            return float((encoder(original).graph - encoder(mirrored).graph).abs().max())

    assert difference() > 1e-2
    assert difference(hidden_irreps="32x0e + 8x1o + 4x2e") > 1e-2  # the angles alone tell
    assert difference(hidden_irreps="32x0e + 8x1o + 4x2e", angles="none") < 1e-4


@pytest.mark.parametrize("name", ["gin", "equivariant"])
def test_assert_invariant_helper_passes_for_builtin_encoders(name: str, batch: Batch) -> None:
    worst = assert_invariant(build(name), batch, generator=torch.Generator().manual_seed(3))
    assert worst < 1e-4


class _PositionReader(protsteps.Encoder):
    """An encoder that is not invariant: it embeds raw coordinates."""

    requires = frozenset({"pos"})
    out_dim = 3

    def forward(self, batch: Batch, teacher_features: torch.Tensor | None = None) -> protsteps.EncoderOutput:
        graph = scatter(batch.pos, batch.batch, batch.num_graphs, "mean")
        return protsteps.EncoderOutput(node=batch.pos, graph=graph)


def test_assert_invariant_helper_catches_a_frame_dependent_encoder(batch: Batch) -> None:
    with pytest.raises(AssertionError, match="_PositionReader is not invariant: its node embedding"):
        assert_invariant(_PositionReader(), batch)


class _EdgeAttrReader(protsteps.Encoder):
    """Reads edge_attr as if every column were invariant: wrong for spherical harmonics."""

    requires = frozenset({"edge_attr"})
    out_dim = 1

    def forward(self, batch: Batch, teacher_features: torch.Tensor | None = None) -> protsteps.EncoderOutput:
        per_edge = batch.edge_attr.sum(dim=-1, keepdim=True)
        node = scatter(per_edge, batch.edge_index[1], batch.num_nodes, "sum")
        return protsteps.EncoderOutput(node=node, graph=scatter(node, batch.batch, batch.num_graphs, "sum"))


@pytest.mark.parametrize("mirror", [False, True])
def test_rigid_motion_transforms_edge_attr_as_refeaturizing_does(mirror: bool, structures_dir: Path) -> None:
    """Spherical harmonics in edge_attr turn (and flip sign in a mirror) like the structure."""
    generator = torch.Generator().manual_seed(5)
    rotation = random_rotation(generator)
    if mirror:
        rotation = -rotation
    translation = torch.tensor([4.0, -7.0, 2.5], dtype=torch.float64)
    featurizer = protsteps.build("featurizer", "residue_graph", rbf=8, sh_lmax=3)
    assert featurizer.edge_attr_irreps == "8x0e + 1x0e + 1x1o + 1x2e + 1x3o"
    chains, moved = _rotated_chains(structures_dir / "db55_unbound/1PXV_r_u.pdb.gz", rotation, translation)
    original = collate([featurizer(c) for c in chains])
    refeaturized = collate([featurizer(c) for c in moved])
    assert torch.equal(original.edge_index, refeaturized.edge_index)
    transformed = rigid_motion(original, rotation, translation, featurizer.edge_attr_irreps)
    assert (transformed.edge_attr - refeaturized.edge_attr).abs().max() < 1e-3
    assert (original.edge_attr - refeaturized.edge_attr).abs().max() > 0.5  # it did change


def test_assert_invariant_needs_and_uses_the_irreps_of_edge_attr(structures_dir: Path) -> None:
    featurizer = protsteps.build("featurizer", "residue_graph", rbf=8, sh_lmax=2)
    batch = collate([featurizer(c) for c in read_chains(structures_dir / "biopython/1A8O.pdb.gz")])
    with pytest.raises(ValueError, match=r"the batch has edge_attr \(17 columns\): say how they transform"):
        assert_invariant(_EdgeAttrReader(), batch)
    with pytest.raises(AssertionError, match="_EdgeAttrReader is not invariant"):
        assert_invariant(_EdgeAttrReader(), batch, edge_attr_irreps=featurizer.edge_attr_irreps)
    # the radial part alone is invariant, and passes
    radial = batch.replace(edge_attr=batch.edge_attr[:, :8])
    assert assert_invariant(_EdgeAttrReader(), radial, edge_attr_irreps="8x0e") < 1e-3
    with pytest.raises(ValueError, match="has dimension 8, edge_attr has 17 columns"):
        rigid_motion(batch, torch.eye(3), torch.zeros(3), edge_attr_irreps="8x0e")


def test_rigid_motion_moves_positions_and_edge_vectors_consistently(batch: Batch) -> None:
    rotation = random_rotation(torch.Generator().manual_seed(0))
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=rotation.dtype), atol=1e-12)
    assert torch.linalg.det(rotation) > 0
    before = batch.pos.clone(), batch.edge_vector.clone()
    moved = rigid_motion(batch, rotation, torch.tensor([1.0, -2.0, 3.0]))
    source, target = moved.edge_index
    delta = moved.pos[target] - moved.pos[source]
    assert torch.allclose(delta / delta.norm(dim=-1, keepdim=True), moved.edge_vector, atol=1e-5)
    assert torch.allclose(moved.edge_distance, delta.norm(dim=-1), atol=1e-4)
    assert torch.equal(batch.pos, before[0]) and torch.equal(batch.edge_vector, before[1])


# ------------------------------------------------------------------ the released code's settings


def test_paper_angle_encoding_is_the_released_codes() -> None:
    from protsteps_gnn.features import paper_angle_encoding

    degrees = torch.tensor([[-179.0, 60.0, 0.0], [179.0, -45.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[2, 1] = False  # hidden psi
    enc = paper_angle_encoding(torch.deg2rad(degrees), mask, num_basis=128)
    assert enc.shape == (3, 256)
    # the released code: exp(-10 (degrees/180 - c)^2), c = linspace(-pi, pi, 128), phi then psi
    centres = torch.linspace(-math.pi, math.pi, 128)
    expected = torch.exp(-10 * (degrees[:, :2, None] / 180 - centres).square()).reshape(3, 256)
    expected[2, 128:] = 0.0
    assert torch.allclose(enc, expected, atol=1e-6)
    # no wrap-around: -179° and 179° are encoded far apart; the outer centres never fire
    assert float((enc[0, :128] - enc[1, :128]).abs().max()) > 0.9
    a = torch.linspace(-math.pi, math.pi, 721)
    every = paper_angle_encoding(torch.stack([a, a, a], 1), torch.ones(721, 3, dtype=torch.bool))
    assert float(every[:, :20].max()) < 1e-3 and float(every[:, -20:].max()) < 1e-3


def test_paper_angle_encoding_in_the_encoder_input(batch: Batch) -> None:
    encoder = build("gin", teacher_dim=12, angle_encoding="paper", angle_basis=128, hidden_dim=0)
    assert encoder.inputs.out_dim == 12 + 256 == encoder.out_dim
    assert angle_encoding_width(128, "phi_psi", "paper") == 256
    x = encoder.inputs(batch, torch.zeros(batch.num_nodes, 12))
    assert x.shape == (batch.num_nodes, 268) and bool((x[:, 12:] >= 0).all())


@pytest.mark.parametrize("name", ["gin", "equivariant"])
def test_structure_output_is_the_message_passing_before_the_teacher_residual(name: str, batch: Batch) -> None:
    encoder = build(name, teacher_dim=12).eval()
    assert encoder.structure_dim is not None
    features = torch.randn(batch.num_nodes, 12)
    out = encoder(batch, features)
    assert out.structure is not None and out.structure.shape == (batch.num_nodes, encoder.structure_dim)
    if name == "gin":
        # node = structure + P x: the residual is exactly the difference
        x = encoder.inputs(batch, features)
        assert torch.allclose(out.node - out.structure, encoder.residual(x), atol=1e-5)
    else:
        assert torch.equal(out.structure, out.node)
