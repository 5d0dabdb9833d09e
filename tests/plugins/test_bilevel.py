"""The schemes: the pseudo bi-level hypergradient against finite differences, the MI bound,
the critic, and the teacher's stored weights staying put."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import protsteps
from protsteps.errors import CompositionError
from protsteps.model import compose
from protsteps.optim import SchemeSetup
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config
from protsteps_bilevel.mi import Critic, jensen_shannon_loss


def build(small_structures, tiny_esm_weights, scheme: str, dtype=torch.float32, extra=()):
    catalog = default_catalog()
    config = load_run_config(
        None,
        catalog,
        components={"encoder": "gin", "teacher": "esm", "scheme": scheme},
        sets=[
            f"teacher.weights={str(tiny_esm_weights)!r}".replace("'", '"'),
            "encoder.hidden_dim=16",
            "encoder.dropout=0.0",
            "tasks.distance.num_pairs=32",
            "train.lr=0.01",
            *extra,
        ],
    )
    composition = compose(config, catalog)
    model = composition.model.to(dtype)
    composition.scheme.setup(
        SchemeSetup(model=model, train=config.train, total_steps=10, device=torch.device("cpu"))
    )
    graphs = [g for p in small_structures[:3] for g in protsteps.featurize(p)]
    batch = protsteps.collate(graphs).to("cpu", dtype=dtype)
    return composition, model, batch


def outer_loss(scheme, model, batch, seed: int) -> torch.Tensor:
    corrupted, states = model.corrupt(batch, torch.Generator().manual_seed(seed))
    loss, _, _, _ = scheme.objective(corrupted, states)
    return loss


@pytest.mark.slow
def test_hypergradient_matches_finite_differences_and_differs_from_joint(small_structures, tiny_esm_weights):
    torch.manual_seed(0)
    composition, model, batch = build(
        small_structures, tiny_esm_weights, "pseudo_bilevel", torch.float64, extra=["scheme.inner_lr=0.5"]
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
    for name, value in model.teacher.tail_parameters().items():
        assert torch.equal(value, tail_before[name]), name
        assert value.grad is None or not value.grad.any()
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, scheme.critic.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(student_before, model.student_parameters(), strict=True))


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
