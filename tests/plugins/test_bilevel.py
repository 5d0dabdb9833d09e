"""The schemes: the pseudo bi-level hypergradient against finite differences, the MI bound,
the critic, and the teacher's stored weights staying put."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

import protsteps
from protsteps.errors import CompositionError
from protsteps.model import compose
from protsteps.optim import SchemeSetup
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config
from protsteps.scatter import scatter_mean
from protsteps_bilevel.mi import Critic, jensen_shannon_loss, silent_bound
from protsteps_bilevel.pseudo_bilevel import SILENT_CRITIC_UPDATES


def build(
    small_structures, tiny_esm_weights, scheme: str, dtype=torch.float32, extra=(), preset=None, notify=None
):
    catalog = default_catalog()
    student = ["encoder.hidden_dim=16", "encoder.dropout=0.0", "tasks.distance.num_pairs=32"]
    config = load_run_config(
        None,
        catalog,
        preset=preset,
        components={"encoder": "gin", "teacher": "esm", "scheme": scheme},
        sets=[
            f"teacher.weights={str(tiny_esm_weights)!r}".replace("'", '"'),
            *(student if preset is None else []),
            "train.lr=0.01",
            *extra,
        ],
    )
    torch.manual_seed(0)
    composition = compose(config, catalog)
    model = composition.model.to(dtype)
    composition.scheme.setup(
        SchemeSetup(
            model=model,
            train=config.train,
            total_steps=10,
            device=torch.device("cpu"),
            epoch_starts=[0, 5, 10],
            notify=notify or (lambda message: None),
        )
    )
    graphs = [g for p in small_structures[:3] for g in protsteps.featurize(p)]
    batch = protsteps.collate(graphs).to("cpu", dtype=dtype)
    return composition, model, batch


def singles(small_structures, count: int, dtype=torch.float32) -> list[protsteps.Batch]:
    """Batches of one protein each, distinct chains."""
    return [
        protsteps.collate(protsteps.featurize(p)[:1]).to("cpu", dtype=dtype) for p in small_structures[:count]
    ]


def outer_loss(scheme, model, batch, seed: int) -> torch.Tensor:
    corrupted, states = model.corrupt(batch, torch.Generator().manual_seed(seed))
    loss, _, _, _ = scheme.objective(corrupted, states)
    return loss


# the paper's encoder detaches its first layer's input, so its outer gradient is partial (as in
# the released code): the check runs with that detach switched off, everything else as released
PAPER_DIFFERENTIABLE = [
    "encoder.detach_input=false",
    'scheme.negatives="in_batch"',
    "train.batch_size=3",
    "tasks.distance.num_pairs=0",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "extra"), [(None, []), ("paper", PAPER_DIFFERENTIABLE)], ids=["default", "paper"]
)
def test_hypergradient_matches_finite_differences_and_differs_from_joint(
    small_structures, tiny_esm_weights, preset, extra
):
    composition, model, batch = build(
        small_structures,
        tiny_esm_weights,
        "pseudo_bilevel",
        torch.float64,
        extra=["scheme.inner_lr=0.5", "scheme.anneal_inner_lr=false", *extra],
        preset=preset,
    )
    scheme = composition.scheme
    model.eval()  # no dropout: the loss is a deterministic function of the parameters
    params = model.student_parameters()
    _, grads = scheme.hypergradient(batch, torch.Generator().manual_seed(3))

    torch.manual_seed(0)
    direction = [torch.randn_like(p) for p in params]
    norm = torch.sqrt(sum((d * d).sum() for d in direction))
    direction = [d / norm for d in direction]
    analytic = float(sum((g * d).sum() for g, d in zip(grads, direction, strict=True)))

    # fair-esm's attention softmax runs in float32 even on float64 inputs, which puts ~1e-10
    # of noise on the loss: eps = 1e-4 keeps that far below the 1e-3 tolerance while the
    # central difference's O(eps^2) error stays negligible
    eps = 1e-4
    with torch.no_grad():
        originals = [p.detach().clone() for p in params]

    def loss_at(step: float) -> float:
        with torch.no_grad():
            for p, o, d in zip(params, originals, direction, strict=True):
                p.copy_(o + step * d)
        return float(outer_loss(scheme, model, batch, seed=3).detach())

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    loss_at(0.0)
    assert abs(analytic - numeric) <= 1e-3 * abs(numeric), (analytic, numeric)

    # the joint gradient (teacher at theta, no look-ahead) misses the second-order term
    corrupted, states = model.corrupt(batch, torch.Generator().manual_seed(3))
    features = model.teacher_features(corrupted)
    joint_loss, _ = model(corrupted, states, features)
    joint_grads = torch.autograd.grad(joint_loss, params, allow_unused=True)
    joint = float(sum((g * d).sum() for g, d in zip(joint_grads, direction, strict=True) if g is not None))
    assert abs(joint - analytic) > 1e-2 * abs(analytic), (joint, analytic)


def test_a_step_leaves_the_teachers_weights_unchanged_and_trains_the_critic(
    small_structures, tiny_esm_weights
):
    composition, model, batch = build(small_structures, tiny_esm_weights, "pseudo_bilevel")
    scheme = composition.scheme
    tail_before = {k: v.detach().clone() for k, v in model.teacher.tail_parameters().items()}
    critic_before = [p.detach().clone() for p in scheme.critic.parameters()]
    student_before = [p.detach().clone() for p in model.student_parameters()]
    values = scheme.step(batch, torch.Generator().manual_seed(0))
    assert {"loss", "mi", "critic_loss", "lr", "distance/loss", "dihedral/loss"} <= set(values)
    assert values["critic_silent"] == 0.0  # a live critic is not reported
    for name, value in model.teacher.tail_parameters().items():
        assert torch.equal(value, tail_before[name]), name
        assert value.grad is None or not value.grad.any()
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, scheme.critic.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(student_before, model.student_parameters(), strict=True))


def test_a_bound_is_silent_when_the_views_share_no_active_unit():
    # the released critic's ReLU projections, each alive and depending on its input, but
    # the sequence view only ever activates unit 0 and the structure view only unit 1
    critic = Critic(2, 2, hidden_dim=1, out_dim=2, projection="paper")
    with torch.no_grad():
        for projection, bias in ((critic.f_s, [0.0, -100.0]), (critic.f_g, [-100.0, 0.0])):
            projection.first.weight.zero_()
            projection.first.bias.zero_()
            projection.second.weight.zero_()
            projection.second.bias.copy_(torch.tensor(bias))
    s = torch.rand(4, 2) + 0.5
    g = torch.rand(4, 2) + 0.5
    assert critic.f_s(s)[:, 0].std() > 0 and critic.f_g(g)[:, 1].std() > 0  # they see their input
    loss, silent, zero = silent_bound(critic, s, g)
    assert (silent, zero) == (True, True) and loss == pytest.approx(2 * math.log(2))
    with torch.no_grad():
        critic.f_g.second.bias[0] = 0.0  # one unit in common: the views get a gradient again
    loss, silent, zero = silent_bound(critic, s, g)
    assert (silent, zero) == (False, False)
    torch.manual_seed(0)
    assert silent_bound(Critic(3, 5, 8, 4), torch.randn(4, 3), torch.randn(4, 5))[1] is False


def test_a_silent_critic_is_logged_and_reported_once(small_structures, tiny_esm_weights):
    # every ReLU unit of the sequence view's projection below 0 for any input (as the released
    # critic's become at its learning rate 0.1): every pair scores 0 and nothing trains it back
    said: list[str] = []
    composition, model, batch = build(
        small_structures,
        tiny_esm_weights,
        "pseudo_bilevel",
        extra=['scheme.critic_projection="paper"', "scheme.critic_dim=32", "scheme.inner_lr=0.5"],
        notify=said.append,
    )
    scheme = composition.scheme
    f_s = scheme.critic.f_s
    with torch.no_grad():
        f_s.first.weight.zero_()
        f_s.first.bias.fill_(-1e4)
        f_s.second.weight.zero_()
        f_s.second.bias.fill_(-1.0)
    tail = dict(model.teacher.tail_parameters())
    ahead, _, _, _ = scheme.objective.look_ahead(batch)
    for name, value in ahead.items():  # no gradient through a silent critic: theta' = theta
        assert torch.equal(value, tail[name]), name
    for step in range(SILENT_CRITIC_UPDATES + 2):
        values = scheme.step(batch, torch.Generator().manual_seed(step))
        assert values["critic_silent"] == 1.0
        assert values["critic_loss"] == pytest.approx(2 * math.log(2))
        assert len(said) == (0 if step < SILENT_CRITIC_UPDATES - 1 else 1)
    assert f"last {SILENT_CRITIC_UPDATES} critic updates" in said[0]
    assert "every pair scores 0" in said[0] and "critic_lr" in said[0]
    assert composition.scheme.state_dict()["silent_critic_updates"] == SILENT_CRITIC_UPDATES + 2
    # revived (its layers drawn afresh), the count starts again
    torch.manual_seed(1)
    f_s.first.reset_parameters()
    f_s.second.reset_parameters()
    assert scheme.step(batch, torch.Generator().manual_seed(99))["critic_silent"] == 0.0
    assert composition.scheme.state_dict()["silent_critic_updates"] == 0


def test_scheme_state_round_trips(small_structures, tiny_esm_weights):
    composition, _model, batch = build(small_structures, tiny_esm_weights, "pseudo_bilevel")
    composition.scheme.step(batch, torch.Generator().manual_seed(0))
    state = composition.scheme.state_dict()
    again, _model2, _ = build(small_structures, tiny_esm_weights, "pseudo_bilevel")
    again.scheme.load_state_dict(state)
    for a, b in zip(again.scheme.critic.parameters(), composition.scheme.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    assert again.scheme.student.scheduler.last_epoch == 1


def test_pseudo_bilevel_without_a_teacher_fails_at_build():
    catalog = default_catalog()
    config = load_run_config(None, catalog, components={"teacher": "none", "scheme": "pseudo_bilevel"})
    with pytest.raises(CompositionError, match="scheme 'pseudo_bilevel' needs a teacher"):
        compose(config, catalog)


def test_auto_scheme_follows_the_teacher(small_structures, tiny_esm_weights):
    catalog = default_catalog()
    config = load_run_config(None, catalog, components={"teacher": "none"})
    composition = compose(config, catalog)
    assert composition.config.scheme.name == "joint"
    assert "scheme auto -> joint" in composition.notes[-1]
    with_teacher, _, _ = build(small_structures, tiny_esm_weights, "auto")
    assert with_teacher.config.scheme.name == "pseudo_bilevel"
    assert dataclasses.asdict(with_teacher.config.scheme.config)["inner_steps"] == 1


def test_jensen_shannon_bound_uses_in_batch_negatives():
    scores = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    expected = (
        torch.nn.functional.softplus(-torch.tensor([3.0, 2.0])).mean()
        + torch.nn.functional.softplus(torch.tensor([-1.0, 0.5])).mean()
    )
    torch.testing.assert_close(jensen_shannon_loss(scores), expected)
    with pytest.raises(ValueError, match="at least 2 proteins"):
        jensen_shannon_loss(torch.ones(1, 1))


def test_critic_scores_every_pair():
    critic = Critic(sequence_dim=5, structure_dim=3, hidden_dim=8, out_dim=4)
    s, g = torch.randn(6, 5), torch.randn(6, 3)
    scores = critic(s, g)
    assert scores.shape == (6, 6)
    torch.testing.assert_close(scores[2, 4], (critic.f_s(s[2:3]) * critic.f_g(g[4:5])).sum())


def test_a_batch_of_one_protein_skips_the_mi_term(small_structures, tiny_esm_weights):
    composition, _model, _ = build(small_structures, tiny_esm_weights, "pseudo_bilevel")
    single = protsteps.collate(protsteps.featurize(small_structures[0]))
    values = composition.scheme.step(single, torch.Generator().manual_seed(0))
    assert values["mi_skipped"] == 1.0 and "mi" not in values
    assert torch.isfinite(torch.tensor(values["loss"]))


# ------------------------------------------------------------------ the two views of the MI bound


def test_the_gnn_structure_view_is_a_constant_of_the_inner_step(small_structures, tiny_esm_weights):
    composition, model, batch = build(small_structures, tiny_esm_weights, "pseudo_bilevel")
    objective = composition.scheme.objective
    assert objective.structure_view == "gnn"
    tail = model.teacher.tail_parameters()
    s, g = objective.views(batch, model.teacher(batch.sequences))
    # the tail moves s, never g: no gradient path from g back to the tail ...
    assert all(grad is None for grad in torch.autograd.grad(g.sum(), list(tail.values()), allow_unused=True))
    assert all(
        grad is not None for grad in torch.autograd.grad(s.sum(), list(tail.values()), allow_unused=True)
    )
    # ... so the inner gradient on the tail flows only through s
    s, g = objective.views(batch, model.teacher(batch.sequences))
    critic = composition.scheme.critic
    through_both = torch.autograd.grad(jensen_shannon_loss(critic(s, g)), list(tail.values()))
    s, g = objective.views(batch, model.teacher(batch.sequences))
    through_s = torch.autograd.grad(jensen_shannon_loss(critic(s, g.detach())), list(tail.values()))
    for a, b in zip(through_both, through_s, strict=True):
        assert torch.equal(a, b)


def test_the_embedding_view_contains_the_sequence_view(small_structures, tiny_esm_weights):
    """What the review found: with the paper's identity residual, the protein embedding's
    first columns are the mean of the GNN output plus s itself, and the inner gradient
    reaches the tail through g too."""
    composition, model, batch = build(
        small_structures,
        tiny_esm_weights,
        "pseudo_bilevel",
        extra=[
            "encoder.hidden_dim=0",
            'encoder.residual="with_teacher"',
            'scheme.structure_view="embedding"',
        ],
    )
    objective = composition.scheme.objective
    features = model.teacher(batch.sequences)
    s, g = objective.views(batch, features)
    structure = model.encoder(batch, features).structure
    mean_h = scatter_mean(structure, batch.batch, batch.num_graphs)
    width = s.shape[1]
    assert torch.allclose(g[:, :width], mean_h[:, :width] + s, atol=1e-5)
    tail = model.teacher.tail_parameters()
    assert all(
        grad is not None for grad in torch.autograd.grad(g.sum(), list(tail.values()), allow_unused=True)
    )


def test_gnn_view_needs_an_encoder_that_exposes_its_structure_output():
    from protsteps import BuildContext
    from protsteps_bilevel import PseudoBilevelConfig, PseudoBilevelScheme

    plain = BuildContext(teacher_dim=8, encoder_dim=8, encoder="plain")
    with pytest.raises(CompositionError, match=r"structure_view = \"gnn\".*encoder 'plain' does not provide"):
        PseudoBilevelScheme(PseudoBilevelConfig(), plain)
    scheme = PseudoBilevelScheme(PseudoBilevelConfig(structure_view="embedding"), plain)
    assert scheme.critic.f_g.mlp[0].in_features == 8


def test_the_papers_critic_projection_widens_both_views():
    from protsteps import BuildContext
    from protsteps_bilevel import PseudoBilevelConfig, PseudoBilevelScheme
    from protsteps_bilevel.mi import PaperProjection

    context = BuildContext(teacher_dim=16, encoder_dim=40, structure_dim=40)
    scheme = PseudoBilevelScheme(PseudoBilevelConfig(critic_projection="paper", critic_dim=0), context)
    assert isinstance(scheme.critic.f_s, PaperProjection) and scheme.critic.f_s.second.out_features == 40
    narrow = BuildContext(teacher_dim=64, encoder_dim=40, structure_dim=40)
    with pytest.raises(CompositionError, match="must be at least 64"):
        PseudoBilevelScheme(PseudoBilevelConfig(critic_projection="paper", critic_dim=0), narrow)
    # r = ReLU(W1 x + [x ; 0]), out = ReLU(W2 r + r)
    projection = PaperProjection(3, 5)
    x = torch.randn(4, 3)
    r = torch.relu(projection.first(x) + torch.cat([x, torch.zeros(4, 2)], dim=1))
    torch.testing.assert_close(projection(x), torch.relu(projection.second(r) + r))


# ------------------------------------------------------------------ negatives from the previous step


def test_previous_negatives_make_batch_size_one_bilevel(small_structures, tiny_esm_weights):
    said: list[str] = []
    composition, model, _ = build(
        small_structures,
        tiny_esm_weights,
        "pseudo_bilevel",
        extra=['scheme.negatives="previous"', "scheme.inner_lr=0.5"],
        notify=said.append,
    )
    scheme = composition.scheme
    first, second, third = singles(small_structures, 3)
    values = scheme.step(first, torch.Generator().manual_seed(0))
    assert values["mi_skipped"] == 1.0 and "mi" not in values  # the first step has no previous protein
    assert len(said) == 1 and "skipped" in said[0]
    # the hypergradient at batch size 1 now differs from joint's gradient
    _, bilevel = scheme.hypergradient(second, torch.Generator().manual_seed(1))
    corrupted, states = model.corrupt(second, torch.Generator().manual_seed(1))
    joint_loss, _ = model(corrupted, states, model.teacher_features(corrupted).detach())
    joint = torch.autograd.grad(joint_loss, model.student_parameters(), allow_unused=True)
    difference = sum(
        float((a - (b if b is not None else 0)).norm()) for a, b in zip(bilevel, joint, strict=True)
    )
    assert difference > 1e-4 * sum(float(a.norm()) for a in bilevel)
    for batch, seed in ((second, 1), (third, 2)):
        values = scheme.step(batch, torch.Generator().manual_seed(seed))
        assert "mi_skipped" not in values and math.isfinite(values["mi"])
    assert len(said) == 1


def test_in_batch_negatives_at_batch_size_one_equal_joint(small_structures, tiny_esm_weights):
    composition, model, _ = build(
        small_structures, tiny_esm_weights, "pseudo_bilevel", extra=["scheme.inner_lr=0.5"]
    )
    first, second = singles(small_structures, 2)
    composition.scheme.step(first, torch.Generator().manual_seed(0))
    _, bilevel = composition.scheme.hypergradient(second, torch.Generator().manual_seed(1))
    corrupted, states = model.corrupt(second, torch.Generator().manual_seed(1))
    joint_loss, _ = model(corrupted, states, model.teacher_features(corrupted).detach())
    joint = torch.autograd.grad(joint_loss, model.student_parameters(), allow_unused=True)
    for a, b in zip(bilevel, joint, strict=True):
        assert torch.allclose(a, torch.zeros_like(a) if b is None else b)


def test_resume_restores_the_previous_proteins_and_the_critics_queue(
    small_structures, tiny_esm_weights, one_thread
):
    extra = ['scheme.negatives="previous"', "scheme.critic_every=2"]
    batches = singles(small_structures, 4)

    def run(composition, chosen, start):
        return [
            composition.scheme.step(b, torch.Generator().manual_seed(start + i)) for i, b in enumerate(chosen)
        ]

    straight, _, _ = build(small_structures, tiny_esm_weights, "pseudo_bilevel", extra=extra)
    expected = run(straight, batches, 0)

    first, first_model, _ = build(small_structures, tiny_esm_weights, "pseudo_bilevel", extra=extra)
    run(first, batches[:1], 0)
    state, weights = first.scheme.state_dict(), first_model.state_dict()
    assert state["previous"] is not None and len(state["pending"]) == 1
    resumed, resumed_model, _ = build(small_structures, tiny_esm_weights, "pseudo_bilevel", extra=extra)
    resumed_model.load_state_dict(weights)
    resumed.scheme.load_state_dict(state)
    again = run(resumed, batches[1:], 1)
    for a, b in zip(expected[1:], again, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-7), key
    # without the saved views the second step would have had nothing to contrast with
    forgetful, forgetful_model, _ = build(small_structures, tiny_esm_weights, "pseudo_bilevel", extra=extra)
    forgetful_model.load_state_dict(weights)
    forgetful.scheme.load_state_dict({**state, "previous": None})
    assert "mi_skipped" in run(forgetful, batches[1:2], 1)[0]


def test_the_critic_waits_for_every_second_step(small_structures, tiny_esm_weights):
    composition, _, _ = build(
        small_structures,
        tiny_esm_weights,
        "pseudo_bilevel",
        extra=['scheme.negatives="previous"', "scheme.critic_every=2"],
    )
    scheme = composition.scheme
    before = [p.detach().clone() for p in scheme.critic.parameters()]
    first, second = singles(small_structures, 2)
    values = scheme.step(first, torch.Generator().manual_seed(0))
    assert "critic_loss" not in values
    assert all(torch.equal(a, b) for a, b in zip(before, scheme.critic.parameters(), strict=True))
    values = scheme.step(second, torch.Generator().manual_seed(1))
    assert "critic_loss" in values
    assert any(not torch.equal(a, b) for a, b in zip(before, scheme.critic.parameters(), strict=True))


def test_in_batch_critic_still_updates_every_step_with_two_proteins(small_structures, tiny_esm_weights):
    composition, _, batch = build(small_structures, tiny_esm_weights, "pseudo_bilevel")
    for seed in range(2):
        assert "critic_loss" in composition.scheme.step(batch, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ schedules


def test_alpha_follows_the_students_schedule(small_structures, tiny_esm_weights):
    from protsteps.optim import schedule_factor

    composition, _, batch = build(
        small_structures, tiny_esm_weights, "pseudo_bilevel", extra=['train.schedule="epoch_cosine"']
    )
    alpha = 0.01 * 0.1
    factor = schedule_factor("epoch_cosine", 0, 10, [0, 5, 10])
    for step in range(7):
        values = composition.scheme.step(batch, torch.Generator().manual_seed(step))
        assert math.isclose(values["inner_lr"], alpha * factor(step), rel_tol=1e-6)
        assert math.isclose(values["lr"], 0.01 * factor(step), rel_tol=1e-6)
    assert factor(4) == 1.0 and math.isclose(factor(5), 0.5 * (1 + math.cos(math.pi / 2)))
    constant, _, _ = build(
        small_structures,
        tiny_esm_weights,
        "pseudo_bilevel",
        extra=['train.schedule="epoch_cosine"', "scheme.anneal_inner_lr=false"],
    )
    for step in range(7):
        assert constant.scheme.step(batch, torch.Generator().manual_seed(step))["inner_lr"] == pytest.approx(
            alpha
        )


def test_epoch_cosine_schedule_is_the_released_codes():
    from protsteps.optim import schedule_factor

    starts = [0, 3, 7, 8, 12, 15]  # five epochs of unequal length
    factor = schedule_factor("epoch_cosine", 0, 15, starts)
    released = [(1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]  # adjust_learning_rate
    for epoch, (a, b) in enumerate(itertools.pairwise(starts)):
        for step in range(a, b):
            assert math.isclose(factor(step), released[epoch])
    with pytest.raises(ValueError, match="epoch_cosine schedule needs"):
        schedule_factor("epoch_cosine", 0, 15, [])


# ------------------------------------------------------------------ diagnostics


def test_diagnostics_measure_the_second_order_share(small_structures, tiny_esm_weights):
    extra = ["scheme.diagnostics=true", "train.log_every=2", "scheme.inner_lr=0.5"]
    composition, _, batch = build(small_structures, tiny_esm_weights, "pseudo_bilevel", extra=extra)
    logged = [composition.scheme.step(batch, torch.Generator().manual_seed(s)) for s in range(3)]
    assert "lookahead/second_order" in logged[0] and "lookahead/second_order" not in logged[1]
    assert "lookahead/second_order" in logged[2]
    values = logged[0]
    assert 0 < values["lookahead/second_order"] and -1 <= values["lookahead/cosine_joint"] <= 1
    assert values["lookahead/tail_shift"] > 0
    first_order, _, _ = build(
        small_structures, tiny_esm_weights, "pseudo_bilevel", extra=[*extra, "scheme.second_order=false"]
    )
    values = first_order.scheme.step(batch, torch.Generator().manual_seed(0))
    # without create_graph, theta' does not depend on the student: no second-order term at all
    assert values["lookahead/second_order"] == 0.0 and values["lookahead/tail_shift"] > 0


def test_scheme_settings_out_of_range_are_refused_naming_the_setting():
    from protsteps.errors import ConfigError
    from protsteps_bilevel.pseudo_bilevel import PseudoBilevelConfig

    for setting, value, must in [
        ("critic_lr", 0.0, "> 0"),
        ("inner_lr_factor", -0.1, ">= 0"),
        ("inner_lr", -1e-3, ">= 0"),
        ("inner_steps", 0, ">= 1"),
        ("critic_every", 0, ">= 1"),
        ("critic_steps", -1, ">= 0"),
        ("critic_dim", -1, ">= 0"),
        ("critic_hidden_dim", 0, ">= 1"),
    ]:
        with pytest.raises(
            ConfigError, match=rf"\[scheme\] {setting} = {value} is out of range: it must be {must}"
        ):
            PseudoBilevelConfig(**{setting: value})
        with pytest.raises(ConfigError, match=rf"{setting} = {value} is out of range"):
            load_run_config(
                None, default_catalog(), sets=["scheme.name=pseudo_bilevel", f"scheme.{setting}={value}"]
            )
    PseudoBilevelConfig(inner_lr=None, critic_dim=0, critic_steps=0, inner_lr_factor=0.0)
