"""Metrics against values worked out by hand (the working is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protsteps.downstream import accuracy, average_precision, confusion_matrix, fmax, macro_f1
from protsteps.downstream._metrics import f1_per_class, support

# true 0 0 1 1 2 2, predicted 0 1 1 1 0 2
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 0, 2]


def test_accuracy_and_confusion_matrix():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert support(Y_TRUE, 4).tolist() == [2, 2, 2, 0]


def test_macro_f1_by_hand():
    # class 0: TP 1, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5; class 2: TP 1, FP 0, FN 1 -> 2/3
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx(expected)
    # a class that is neither true nor predicted in this set does not count ...
    assert macro_f1(Y_TRUE, Y_PRED, 5) == pytest.approx(expected)
    assert math.isnan(f1_per_class(Y_TRUE, Y_PRED, 5)[4])
    # ... a class predicted but never true counts as 0
    assert macro_f1([0, 0, 1], [0, 3, 1], 4) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_fmax_by_hand():
    scores = np.array([[0.9, 0.6, 0.1], [0.2, 0.7, 0.4], [0.5, 0.5, 0.5]])
    targets = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)  # the third has no class: left out
    # 0.2 < t <= 0.4: protein 1 predicts {0, 1} (precision 1/2, recall 1), protein 2 {1, 2} (1, 1):
    # precision 3/4, recall 1, F = 6/7; 0.6 < t <= 0.7 ties it (precision 1, recall 3/4); lower
    # thresholds admit false positives, higher ones lose protein 2's classes
    value, threshold = fmax(scores, targets)
    assert value == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.21)
    # at t > 0.7 protein 2 predicts nothing: it leaves the precision mean but not the recall mean
    only_high = fmax(scores, targets, thresholds=np.array([0.8]))
    assert only_high[0] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_fmax_without_true_classes_is_nan():
    value, threshold = fmax(np.ones((2, 2)) * 0.5, np.zeros((2, 2), dtype=bool))
    assert math.isnan(value) and math.isnan(threshold)


def test_average_precision_by_hand_with_ties():
    # thresholds 0.9 (P 1, R 1/2), 0.8 (P 2/3, R 1), 0.3 (P 1/2, R 1): 1/2 * 1 + 1/2 * 2/3
    assert average_precision([0.9, 0.8, 0.8, 0.3], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # tied scores enter together: at 0.8 one of two is positive (P 1/2, R 1/2), then P 2/3 at R 1;
    # ranking the tied positive first would give 5/6 instead
    assert average_precision([0.8, 0.8, 0.3], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_micro_aupr_pools_every_protein_and_class():
    scores = np.array([[0.9, 0.3], [0.8, 0.8]])
    targets = np.array([[1, 0], [0, 1]], dtype=bool)
    assert average_precision(scores, targets) == average_precision([0.9, 0.3, 0.8, 0.8], [1, 0, 0, 1])
