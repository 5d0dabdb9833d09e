"""The tasks plugin: pair sampling and distance bins, residue masking and the dihedral losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import protsteps
from protsteps import BuildContext, Catalog, EncoderOutput, collate
from protsteps.errors import CompositionError
from protsteps.graph import Batch
from protsteps_tasks import (
    DihedralTask,
    DistanceTask,
    angular_error,
    distance_bins,
    mask_residues,
    sample_residue_pairs,
)
from protsteps_tasks import hooks as task_hooks


@pytest.fixture(scope="module")
def batch(structures_dir: Path) -> Batch:
    graphs = protsteps.featurize(structures_dir / "db55_unbound/1AY7_r_u.pdb.gz")
    graphs += protsteps.featurize(structures_dir / "biopython/1A8O.pdb.gz")
    graphs += protsteps.featurize(structures_dir / "db55_unbound/1XU1_l_u.pdb.gz")
    return collate(graphs)


def build(name: str, encoder_dim: int = 16, **values: object) -> nn.Module:
    torch.manual_seed(0)
    catalog = Catalog.from_plugins({"tasks": task_hooks})
    return catalog.build("task", name, context=BuildContext(encoder_dim=encoder_dim), **values)


def _toy_batch(lengths: list[int]) -> Batch:
    """Proteins as straight chains along x, 1 Å apart, so that d_ij = |i - j|."""
    from protsteps import ProteinGraph
    from protsteps.graph import residue_types

    graphs = []
    for length in lengths:
        pos = torch.zeros(length, 3)
        pos[:, 0] = torch.arange(length, dtype=torch.float32)
        graphs.append(
            ProteinGraph(
                source="toy",
                chain_id="A",
                sequence="A" * length,
                residue_type=residue_types("A" * length),
                residue_number=torch.arange(length),
                pos=pos,
                backbone=torch.zeros(length, 4, 3),
                backbone_mask=torch.zeros(length, 4, dtype=torch.bool),
                dihedrals=torch.zeros(length, 3),
                dihedral_mask=torch.ones(length, 3, dtype=torch.bool),
                edge_index=torch.zeros(2, 0, dtype=torch.long),
                edge_distance=torch.zeros(0),
                edge_vector=torch.zeros(0, 3),
                edge_attr=torch.zeros(0, 0),
                node_attr=torch.zeros(length, 0),
            )
        )
    return collate(graphs)


# ------------------------------------------------------------------ distance


def test_pairs_stay_inside_their_protein_and_respect_the_separation(batch: Batch) -> None:
    pairs = sample_residue_pairs(batch, 300, min_separation=3, generator=torch.Generator().manual_seed(0))
    assert pairs.first.shape == pairs.second.shape == (300 * batch.num_graphs,)
    assert torch.equal(batch.batch[pairs.first], batch.batch[pairs.second])
    assert torch.equal(torch.bincount(batch.batch[pairs.first]), torch.full((batch.num_graphs,), 300))
    assert int((pairs.first - pairs.second).abs().min()) >= 3


def test_pairs_are_uniform_over_ordered_pairs() -> None:
    toy = _toy_batch([6])
    generator = torch.Generator().manual_seed(0)
    for min_separation, count in ((0, 36), (2, 20)):
        pairs = sample_residue_pairs(toy, 72_000, min_separation, generator)
        frequency = torch.bincount(pairs.first * 6 + pairs.second, minlength=36).double() / 72_000
        allowed = (torch.arange(6)[:, None] - torch.arange(6)[None, :]).abs().flatten() >= min_separation
        assert int(allowed.sum()) == count
        assert torch.all(frequency[~allowed] == 0)
        assert torch.allclose(
            frequency[allowed], torch.full((count,), 1 / count, dtype=torch.float64), atol=0.004
        )


def test_pairs_are_uniform_within_each_protein_of_a_mixed_batch() -> None:
    # drawn for the whole batch at once: a short protein's padded row must not leak pairs
    # beyond its length, nor skew its neighbours' frequencies
    toy = _toy_batch([4, 1, 7])
    generator = torch.Generator().manual_seed(1)
    pairs = sample_residue_pairs(toy, 60_000, 1, generator)
    assert torch.equal(toy.batch[pairs.first], toy.batch[pairs.second])
    assert torch.equal(torch.bincount(toy.batch[pairs.first], minlength=3), torch.tensor([60_000, 0, 60_000]))
    for protein, length in ((0, 4), (2, 7)):
        start = int(toy.ptr[protein])
        mine = toy.batch[pairs.first] == protein
        i, j = pairs.first[mine] - start, pairs.second[mine] - start
        assert int(i.max()) < length and int(j.max()) < length and bool(((i - j).abs() >= 1).all())
        frequency = torch.bincount(i * length + j, minlength=length * length).double() / 60_000
        allowed = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs().flatten() >= 1
        count = length * (length - 1)
        assert torch.allclose(
            frequency[allowed], torch.full((count,), 1 / count, dtype=torch.float64), atol=0.005
        )


def test_pairs_are_reproducible_and_short_proteins_get_none() -> None:
    toy = _toy_batch([3, 10])
    a = sample_residue_pairs(toy, 50, 5, torch.Generator().manual_seed(7))
    b = sample_residue_pairs(toy, 50, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a.first, b.first) and torch.equal(a.second, b.second)
    assert bool((toy.batch[a.first] == 1).all())  # the 3-residue protein has no pair 5 apart
    none = sample_residue_pairs(toy, 50, 20, torch.Generator().manual_seed(7))
    assert none.first.numel() == 0


def test_distance_bins() -> None:
    d = torch.tensor([0.0, 4.99, 5.0, 17.3, 149.9, 150.0, 1000.0])
    assert distance_bins(d).tolist() == [0, 0, 1, 3, 29, 29, 29]
    assert distance_bins(d, num_bins=4, bin_width=10.0).tolist() == [0, 0, 0, 1, 3, 3, 3]


def test_distance_task_loss_is_cross_entropy_of_the_sampled_pairs(batch: Batch) -> None:
    task = build("distance", encoder_dim=16, num_pairs=64, pair_feature="squared_difference")
    assert isinstance(task, DistanceTask)
    node = torch.randn(batch.num_nodes, 16)
    same, pairs = task.corrupt(batch, torch.Generator().manual_seed(0))
    assert same is batch
    out = task(batch, EncoderOutput(node=node, graph=node[:3]), pairs)
    e = (node[pairs.first] - node[pairs.second]) ** 2
    assert task.pair_features(node, pairs).shape == (64 * batch.num_graphs, 16)
    distance = (batch.pos[pairs.first] - batch.pos[pairs.second]).norm(dim=-1)
    target = torch.clamp((distance / 5).floor(), max=29).long()
    logits = task.head(e)
    assert torch.allclose(out.loss, nn.functional.cross_entropy(logits, target))
    accuracy = (logits.argmax(dim=1) == target).float().mean()
    assert torch.allclose(out.metrics["accuracy"], accuracy)
    assert out.metrics["pairs"] == 64 * batch.num_graphs
    # the paper's head: d -> d/10 -> ReLU -> 30
    assert [m.__class__.__name__ for m in task.head] == ["Linear", "ReLU", "Linear"]
    assert task.head[0].out_features == 1 and task.head[2].out_features == 30


def test_distance_concat_feature_and_head_width(batch: Batch) -> None:
    task = build("distance", encoder_dim=20, pair_feature="concat", head_hidden=7, num_bins=12)
    node = torch.randn(batch.num_nodes, 20)
    _, pairs = task.corrupt(batch, torch.Generator().manual_seed(0))
    features = task.pair_features(node, pairs)
    assert torch.equal(features, torch.cat([node[pairs.first], node[pairs.second]], dim=1))
    assert task.head[0].in_features == 40 and task.head[0].out_features == 7
    assert task(batch, EncoderOutput(node, node[:3]), pairs).loss.isfinite()


def test_default_pair_feature_is_order_free(batch: Batch) -> None:
    task = build("distance", encoder_dim=20)
    node = torch.randn(batch.num_nodes, 20)
    _, pairs = task.corrupt(batch, torch.Generator().manual_seed(0))
    first, second = node[pairs.first], node[pairs.second]
    features = task.pair_features(node, pairs)
    assert torch.allclose(features, torch.cat([first + second, (first - second) ** 2], dim=1))
    swapped = type(pairs)(pairs.second, pairs.first)
    assert torch.allclose(task.pair_features(node, swapped), features)
    assert task.head[0].in_features == 40 and task.head[0].out_features == 2  # d / 10


@pytest.mark.parametrize("pair_feature", ["squared_difference", "concat", "sum_and_squared_difference"])
@pytest.mark.parametrize("num_pairs", [64, 0])
def test_distance_logits_equal_the_head_on_the_pair_features(
    batch: Batch, pair_feature: str, num_pairs: int
) -> None:
    # the fast path (first layer split per residue, z_i - z_j as one sparse product) against
    # the obvious one, forward and every gradient, on real chains, every pair included
    task = build("distance", encoder_dim=24, num_pairs=num_pairs, min_separation=0, pair_feature=pair_feature)
    task = task.double()
    _, pairs = task.corrupt(batch, torch.Generator().manual_seed(3))
    node = torch.randn(batch.num_nodes, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    upstream = torch.randn(pairs.first.shape[0], 30, dtype=torch.float64)
    results = []
    for logits_of in (task.logits, lambda z, p: task.head(task.pair_features(z, p))):
        z = node.clone().requires_grad_(True)
        logits = logits_of(z, pairs)
        grads = torch.autograd.grad((logits * upstream).sum(), [z, *task.parameters()])
        results.append((logits, grads))
    (fast, fast_grads), (reference, reference_grads) = results
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    for got, expected in zip(fast_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_distance_task_learns_a_toy_distance() -> None:
    # Embeddings that encode the position on a line: the head must recover the bins.
    toy = _toy_batch([60, 40])
    task = build("distance", encoder_dim=1, num_pairs=128, head_hidden=32, bin_width=10.0, num_bins=6)
    node = toy.pos[:, :1] / 10
    optimizer = torch.optim.Adam(task.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        _, pairs = task.corrupt(toy, generator)
        out = task(toy, EncoderOutput(node, node[:2]), pairs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert out.metrics["accuracy"] > 0.9


def test_distance_task_without_pairs_gives_a_zero_loss_attached_to_the_graph() -> None:
    toy = _toy_batch([3])
    task = build("distance", encoder_dim=4, min_separation=5)
    node = torch.randn(3, 4, requires_grad=True)
    _, pairs = task.corrupt(toy, torch.Generator().manual_seed(0))
    out = task(toy, EncoderOutput(node, node[:1]), pairs)
    out.loss.backward()
    assert float(out.loss.detach()) == 0.0 and out.metrics["pairs"] == 0
    assert torch.equal(node.grad, torch.zeros_like(node))


# ------------------------------------------------------------------ dihedral


def test_masking_counts_and_eligibility(batch: Batch) -> None:
    masked = mask_residues(batch, 0.15, 2, torch.Generator().manual_seed(0))
    counts = torch.bincount(batch.batch[masked], minlength=batch.num_graphs)
    expected = torch.clamp((batch.lengths * 0.15).floor().long(), min=2)
    assert torch.equal(counts, expected)
    assert bool(batch.dihedral_mask[masked][:, :2].any(dim=1).all())
    assert torch.equal(masked, masked.unique())


def test_masking_is_capped_by_residues_with_angles() -> None:
    toy = _toy_batch([10])
    mask = toy.dihedral_mask.clone()
    mask[3:] = False  # only residues 0, 1, 2 have angles
    toy = toy.replace(dihedral_mask=mask)
    masked = mask_residues(toy, 0.9, 2, torch.Generator().manual_seed(0))
    assert masked.tolist() == [0, 1, 2]


def test_corrupt_clears_the_input_mask_on_a_copy(batch: Batch) -> None:
    task = build("dihedral")
    before = batch.dihedral_input_mask.clone()
    corrupted, masked = task.corrupt(batch, torch.Generator().manual_seed(0))
    assert torch.equal(batch.dihedral_input_mask, before)  # the caller's tensor is untouched
    assert not corrupted.dihedral_input_mask[masked].any()
    keep = torch.ones(batch.num_nodes, dtype=torch.bool)
    keep[masked] = False
    assert torch.equal(corrupted.dihedral_input_mask[keep], before[keep])
    _, masked_again = task.corrupt(batch, torch.Generator().manual_seed(0))
    assert torch.equal(masked, masked_again)


class _Fixed(nn.Module):
    """A head that returns a fixed output whatever its input."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, node: torch.Tensor) -> torch.Tensor:
        return self.value + 0 * node[:, :1]


def _one_residue(phi: float, psi: float, psi_defined: bool = True) -> Batch:
    toy = _toy_batch([1])
    mask = torch.tensor([[True, psi_defined, False]])
    return toy.replace(dihedrals=torch.tensor([[phi, psi, 0.0]]), dihedral_mask=mask)


def test_periodic_loss_treats_179_and_minus_179_degrees_as_close() -> None:
    task = build("dihedral", encoder_dim=4)
    assert isinstance(task, DihedralTask)
    predicted = math.radians(179.0)
    toy = _one_residue(math.radians(-179.0), 0.5)
    task.head = _Fixed(
        torch.tensor([[math.sin(predicted), math.cos(predicted), math.sin(0.5), math.cos(0.5)]])
    )
    out = task(toy, EncoderOutput(torch.zeros(1, 4), torch.zeros(1, 4)), torch.tensor([0]))
    assert math.isclose(float(out.loss), (1 - math.cos(math.radians(2.0))) / 2, abs_tol=1e-6)
    assert math.isclose(float(out.metrics["mae_deg"]), 1.0, abs_tol=1e-3)  # (2° + 0°) / 2, degrees
    paper = build("dihedral", encoder_dim=4, objective="paper")
    paper.head = _Fixed(torch.tensor([[179.0 / 180, 0.5 / math.pi]]))
    out = paper(toy, EncoderOutput(torch.zeros(1, 4), torch.zeros(1, 4)), torch.tensor([0]))
    assert math.isclose(float(out.loss), (358.0 / 180) ** 2 / 2, rel_tol=1e-4)
    assert math.isclose(float(out.metrics["mae_deg"]), 1.0, abs_tol=1e-3)


def test_dihedral_loss_ignores_undefined_angles() -> None:
    task = build("dihedral", encoder_dim=4)
    toy = _one_residue(0.3, 2.0, psi_defined=False)
    # perfect on phi, opposite on psi: psi is undefined, so the loss is 0
    task.head = _Fixed(torch.tensor([[math.sin(0.3), math.cos(0.3), -math.sin(2.0), -math.cos(2.0)]]))
    out = task(toy, EncoderOutput(torch.zeros(1, 4), torch.zeros(1, 4)), torch.tensor([0]))
    assert float(out.loss) < 1e-6 and out.metrics["angles"] == 1
    defined = _one_residue(0.3, 2.0, psi_defined=True)
    out = task(defined, EncoderOutput(torch.zeros(1, 4), torch.zeros(1, 4)), torch.tensor([0]))
    assert math.isclose(float(out.loss), 1.0, abs_tol=1e-5)  # (0 + 2) / 2
    assert math.isclose(float(out.metrics["mae_deg"]), 90.0, abs_tol=1e-3)


def test_dihedral_predict_and_angular_error() -> None:
    task = build("dihedral", encoder_dim=4)
    task.head = _Fixed(torch.tensor([[0.0, -2.0, 3.0, 0.0]]))
    assert torch.allclose(task.predict(torch.zeros(1, 4)), torch.tensor([[math.pi, math.pi / 2]]))
    error = angular_error(torch.tensor([3.0, -3.0, 0.5]), torch.tensor([-3.0, 3.0, -0.5]))
    assert torch.allclose(error, torch.tensor([2 * math.pi - 6.0, 2 * math.pi - 6.0, 1.0]))


def test_both_tasks_compose_and_backpropagate(batch: Batch) -> None:
    encoder = protsteps.build("encoder", "gin", hidden_dim=16)
    context = BuildContext(encoder_dim=encoder.out_dim)
    distance = protsteps.build("task", "distance", context=context)
    dihedral = protsteps.build("task", "dihedral", context=context)
    generator = torch.Generator().manual_seed(0)
    seen, pairs = distance.corrupt(batch, generator)
    seen, masked = dihedral.corrupt(seen, generator)
    output = encoder(seen)
    loss = distance(seen, output, pairs).loss + dihedral(seen, output, masked).loss
    loss.backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_tasks_need_the_encoder_width() -> None:
    catalog = Catalog.from_plugins({"tasks": task_hooks})
    for name in ("distance", "dihedral"):
        with pytest.raises(CompositionError, match=f"task '{name}' needs the encoder's embedding width"):
            catalog.build("task", name, context=BuildContext())


# ------------------------------------------------------------------ the released code's settings


def test_all_pairs_when_num_pairs_is_zero(batch: Batch) -> None:
    pairs = sample_residue_pairs(batch, 0, min_separation=0)
    lengths = batch.lengths.tolist()
    assert pairs.first.numel() == sum(n * n for n in lengths)  # every ordered pair, i = j included
    first = batch.batch[pairs.first]
    assert torch.equal(first, batch.batch[pairs.second])
    seen = set(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))
    assert len(seen) == pairs.first.numel()
    separated = sample_residue_pairs(batch, 0, min_separation=3)
    assert bool(((separated.first - separated.second).abs() >= 3).all())
    assert separated.first.numel() == sum(n * n - n - 2 * (n - 1) - 2 * (n - 2) for n in lengths)


def test_all_pairs_loss_is_the_released_codes_full_cross_entropy(batch: Batch) -> None:
    task = build("distance", encoder_dim=8, num_pairs=0, min_separation=0, pair_feature="squared_difference")
    start, end = int(batch.ptr[0]), int(batch.ptr[1])
    node = torch.randn(batch.num_nodes, 8)
    _, state = task.corrupt(batch)
    out = task(batch, EncoderOutput(node, torch.zeros(batch.num_graphs, 8)), state)
    # the first protein alone, as the released code: an L x L x d tensor of squared differences
    z = node[start:end]
    pos = batch.pos[start:end]
    features = (z[None, :, :] - z[:, None, :]).square().reshape(-1, 8)
    target = torch.floor(torch.clamp((pos[None] - pos[:, None]).norm(dim=-1).reshape(-1), 0, 149) / 5).long()
    total = nn.functional.cross_entropy(task.head(features), target, reduction="sum")
    for b in range(1, batch.num_graphs):
        s, e = int(batch.ptr[b]), int(batch.ptr[b + 1])
        z, pos = node[s:e], batch.pos[s:e]
        features = (z[None, :, :] - z[:, None, :]).square().reshape(-1, 8)
        target = torch.floor(
            torch.clamp((pos[None] - pos[:, None]).norm(dim=-1).reshape(-1), 0, 149) / 5
        ).long()
        total = total + nn.functional.cross_entropy(task.head(features), target, reduction="sum")
    expected = total / sum(n * n for n in batch.lengths.tolist())
    assert math.isclose(float(out.loss.detach()), float(expected.detach()), rel_tol=1e-5)


def test_paper_masking_draws_among_all_residues_and_shows_undefined_angles_as_zero(batch: Batch) -> None:
    task = build("dihedral", encoder_dim=4, masking="paper", objective="paper")
    # as if every tenth residue sat between two gaps: no phi, no psi
    undefined = torch.arange(batch.num_nodes) % 10 == 0
    mask = batch.dihedral_mask.clone()
    mask[undefined] = False
    batch = batch.replace(dihedral_mask=mask, dihedral_input_mask=mask.clone())
    hits = torch.zeros(batch.num_nodes, dtype=torch.bool)
    for seed in range(60):
        corrupted, masked = task.corrupt(batch, torch.Generator().manual_seed(seed))
        hits[masked] = True
        visible = corrupted.dihedral_input_mask[:, :2]
        keep = torch.ones(batch.num_nodes, dtype=torch.bool)
        keep[masked] = False
        assert bool(visible[keep].all())  # every other residue shows phi and psi, undefined ones as 0
        assert not bool(visible[masked].any())
        counts = torch.bincount(batch.batch[masked], minlength=batch.num_graphs)
        expected = torch.clamp(torch.floor(batch.lengths * 0.15).long(), min=2)
        assert torch.equal(counts, expected)
    assert bool(hits[undefined].any())  # residues without angles are drawn too
    defined_task = build("dihedral", encoder_dim=4)
    for seed in range(20):
        _, masked = defined_task.corrupt(batch, torch.Generator().manual_seed(seed))
        assert not bool(undefined[masked].any())


def test_paper_masking_scores_undefined_angles_against_zero() -> None:
    toy = _one_residue(0.3, 2.0, psi_defined=False)
    toy = toy.replace(dihedrals=torch.tensor([[0.3, 0.0, 0.0]]))  # featurizers store 0 where undefined
    paper = build("dihedral", encoder_dim=4, objective="paper", masking="paper")
    paper.head = _Fixed(torch.tensor([[0.3 / math.pi, 0.5]]))
    out = paper(toy, EncoderOutput(torch.zeros(1, 4), torch.zeros(1, 4)), torch.tensor([0]))
    assert math.isclose(float(out.loss), 0.5**2 / 2, rel_tol=1e-5)  # psi: target 0, predicted 0.5
    assert out.metrics["angles"] == 2
    defined = build("dihedral", encoder_dim=4, objective="paper")
    defined.head = paper.head
    out = defined(toy, EncoderOutput(torch.zeros(1, 4), torch.zeros(1, 4)), torch.tensor([0]))
    assert float(out.loss) < 1e-10 and out.metrics["angles"] == 1


# ------------------------------------------------------------------ non-finite targets


def test_non_finite_targets_are_refused_naming_the_chain(batch: Batch) -> None:
    from protsteps.optim import NonFiniteLossError

    second = int(batch.ptr[1])  # the first residue of the second protein
    pos = batch.pos.clone()
    pos[second] = torch.tensor([3.0e38, 3.0e38, 0.0])  # its distances overflow to inf
    far = batch.replace(pos=pos)
    distance = build("distance", encoder_dim=4, num_pairs=0, min_separation=0)
    _, pairs = distance.corrupt(far)
    output = EncoderOutput(torch.zeros(far.num_nodes, 4), torch.zeros(far.num_graphs, 4))
    name = f"{batch.sources[1]}:{batch.chain_ids[1]}"
    with pytest.raises(NonFiniteLossError, match=r"task 'distance': non-finite CA-CA distance") as info:
        distance(far, output, pairs)
    assert name in str(info.value) and f"{batch.sources[0]}:{batch.chain_ids[0]}" not in str(info.value)

    dihedrals = batch.dihedrals.clone()
    dihedrals[second:] = math.nan
    broken = batch.replace(dihedrals=dihedrals)
    dihedral = build("dihedral", encoder_dim=4)
    masked = torch.arange(batch.num_nodes)
    with pytest.raises(NonFiniteLossError, match=r"task 'dihedral': non-finite angle target") as info:
        dihedral(broken, output, masked)
    assert name in str(info.value)
