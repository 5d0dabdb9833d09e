"""The evidence experiment's statistics against hand-computed cases."""

from __future__ import annotations

import evidence_stats as S
import numpy as np
import pytest


def test_holm_matches_the_hand_computed_adjustment():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert S.holm([0.02]) == [0.02]


def test_bootstrap_p_counts_each_side_with_the_plus_one_rule():
    assert S.bootstrap_p(np.ones(99)) == pytest.approx(2 / 100)  # lo = 1/100, hi = 100/100
    assert S.bootstrap_p(np.array([-1.0, 0.0, 1.0, 2.0])) == 1.0  # lo = 3/5, hi = 4/5
    assert S.bootstrap_p(-np.ones(9)) == pytest.approx(0.2)


def test_bootstrap_between_seed_spread_only():
    # pretraining seed 0 gives 0 everywhere, seed 1 gives 1: the two drawn rows are
    # (0,0), (0,1), (1,0), (1,1) with probability 1/4 each -> means 0, .5, .5, 1
    means = S.hierarchical_bootstrap(np.array([[0.0, 0.0], [1.0, 1.0]]), samples=20_000, seed=1)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert np.mean(means == 0.0) == pytest.approx(0.25, abs=0.015)
    assert np.mean(means == 0.5) == pytest.approx(0.5, abs=0.015)
    interval = S.summarise(np.array([[0.0, 0.0], [1.0, 1.0]]), samples=20_000)
    assert (interval.mean, interval.low, interval.high, interval.cells) == (0.5, 0.0, 1.0, 4)


def test_bootstrap_variance_adds_both_levels():
    # rows [0, 2] and [4, 6]: a drawn row's mean is 1 or 5 (variance 4), plus the resampling
    # of its 2 columns (population variance 1, over 2 draws: 0.5); two rows drawn
    # independently: variance (4 + 0.5) / 2 = 2.25, mean 3
    means = S.hierarchical_bootstrap(np.array([[0.0, 2.0], [4.0, 6.0]]), samples=40_000, seed=2)
    assert means.mean() == pytest.approx(3.0, abs=0.03)
    assert means.var() == pytest.approx(2.25, rel=0.04)


def test_bootstrap_matches_exhaustive_enumeration_on_a_tiny_case():
    # the slow, obviously right reference: every way of drawing rows, then columns
    import itertools

    values = np.array([[0.1, 0.4, 0.2], [0.3, -0.2, 0.5]])
    P, C = values.shape
    exact = []
    for rows in itertools.product(range(P), repeat=P):
        for cols in itertools.product(itertools.product(range(C), repeat=C), repeat=P):
            exact.append(np.mean([values[r, c] for r, cs in zip(rows, cols, strict=True) for c in cs]))
    exact = np.array(exact)
    means = S.hierarchical_bootstrap(values, samples=40_000, seed=3)
    assert means.mean() == pytest.approx(exact.mean(), abs=0.005)
    assert means.std() == pytest.approx(exact.std(), rel=0.03)
    assert np.percentile(means, 2.5) == pytest.approx(np.percentile(exact, 2.5), abs=0.02)


def test_constant_difference_gives_a_point_interval_and_nan_cells_are_left_out():
    interval = S.summarise(np.full((3, 5), 0.1))
    assert (interval.low, interval.mean, interval.high) == pytest.approx((0.1, 0.1, 0.1))
    assert interval.p == pytest.approx(2 / (S.BOOTSTRAP_SAMPLES + 1))
    with_nan = np.array([[0.2, np.nan], [0.2, 0.2]])
    assert S.summarise(with_nan).cells == 3
    assert S.summarise(with_nan).mean == pytest.approx(0.2)


def test_a_family_is_holm_corrected_together():
    family = S.compare_family({"up": np.full((3, 5), 0.1), "none": np.array([[-1.0, 1.0]] * 3)})
    assert family["up"]["holds"] and not family["none"]["holds"]
    assert family["up"]["p_holm"] == pytest.approx(2 * 2 / (S.BOOTSTRAP_SAMPLES + 1))
