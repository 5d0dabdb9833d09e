r"""Classification metrics, written out so that each is easy to check by hand.

Single-label (one class per protein), with :math:`y_i` the true and :math:`\hat y_i` the
predicted class of protein :math:`i`:

- accuracy: :math:`\frac{1}{P} \sum_i [\hat y_i = y_i]`;
- macro-F1: the mean over classes of :math:`F_1(c) = \frac{2\,TP_c}{2\,TP_c + FP_c + FN_c}`,
  over the classes that occur among the true or the predicted labels of the set scored
  (scikit-learn's default), so a class absent from a small test set does not count as 0;
- the confusion matrix: ``matrix[t, p]`` proteins of true class ``t`` predicted as ``p``.

Multi-label (a set of classes per protein, scores in [0, 1]):

- Fmax, protein-centric, as in CAFA, DeepFRI and GearNet: for each threshold
  :math:`t \in \{0, 0.01, \dots, 1\}`, the predicted set of protein :math:`i` is
  :math:`P_i(t) = \{c : s_{ic} \ge t\}`;
  precision :math:`pr(t)` is the mean of :math:`|P_i(t) \cap T_i| / |P_i(t)|` over the
  proteins with a non-empty :math:`P_i(t)`, recall :math:`rc(t)` the mean of
  :math:`|P_i(t) \cap T_i| / |T_i|` over all proteins with a true class, and
  :math:`F_{max} = \max_t 2\,pr(t)\,rc(t) / (pr(t) + rc(t))`;
- micro AUPR: the average precision of all (protein, class) scores pooled,
  :math:`\sum_n (R_n - R_{n-1}) P_n` over the distinct scores taken as thresholds from the
  highest down (scikit-learn's ``average_precision_score(average="micro")``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "macro_f1",
    "f1_per_class",
    "confusion_matrix",
    "support",
    "fmax",
    "average_precision",
    "FMAX_THRESHOLDS",
    "accuracy_score",
    "macro_f1_score",
    "fmax_score",
    "micro_aupr_score",
]

#: the thresholds Fmax is taken over
FMAX_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def _labels(values: np.ndarray | list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def accuracy(y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int]) -> float:
    """Fraction of proteins whose predicted class is the true one (``y_*: [P] int``)."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries, y_pred {p.size}")
    return float((t == p).mean()) if t.size else float("nan")


def confusion_matrix(
    y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int], num_classes: int
) -> np.ndarray:
    """``[C, C] int``: row = true class, column = predicted class."""
    t, p = _labels(y_true), _labels(y_pred)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    return matrix


def f1_per_class(
    y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int], num_classes: int
) -> np.ndarray:
    """``[C] float``: :math:`2TP / (2TP + FP + FN)` per class; NaN for a class that is
    neither true nor predicted anywhere."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(float)
    fp = matrix.sum(0) - tp
    fn = matrix.sum(1) - tp
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def macro_f1(
    y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int], num_classes: int | None = None
) -> float:
    """Mean F1 over the classes present among the true or predicted labels."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.size == 0:
        return float("nan")
    num_classes = num_classes or int(max(t.max(), p.max())) + 1
    scores = f1_per_class(t, p, num_classes)
    return float(np.nanmean(scores))


def support(y_true: np.ndarray | list[int], num_classes: int) -> np.ndarray:
    """``[C] int``: proteins of each true class."""
    return np.bincount(_labels(y_true), minlength=num_classes)


def fmax(
    scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray = FMAX_THRESHOLDS
) -> tuple[float, float]:
    """Protein-centric Fmax and the threshold reaching it.

    Parameters
    ----------
    scores: [P, C] float in [0, 1].
    targets: [P, C] bool, the true classes of each protein.

    Proteins without any true class are left out (as in CAFA). Returns ``(nan, nan)`` when
    no protein has a true class.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    keep = targets.any(1)
    scores, targets = scores[keep], targets[keep]
    if not len(scores):
        return float("nan"), float("nan")
    best, best_t = 0.0, float(thresholds[0])
    true_counts = targets.sum(1)
    for t in thresholds:
        predicted = scores >= t - 1e-12
        counts = predicted.sum(1)
        hits = (predicted & targets).sum(1)
        covered = counts > 0
        if not covered.any():
            continue
        precision = float((hits[covered] / counts[covered]).mean())
        recall = float((hits / true_counts).mean())
        if precision + recall == 0:
            continue
        f = 2 * precision * recall / (precision + recall)
        if f > best + 1e-12:
            best, best_t = f, float(t)
    return best, best_t


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of pooled scores (micro AUPR for ``[P, C]`` inputs).

    :math:`\\sum_n (R_n - R_{n-1}) P_n` with one step per distinct score, from the highest;
    tied scores enter together. NaN when there is no positive.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(targets, dtype=bool).reshape(-1)
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # the last index of every run of equal scores is where a threshold can sit
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    predicted = last + 1
    precision = tp / predicted
    recall = tp / positives
    steps = np.diff(np.r_[0.0, recall])
    return float((steps * precision).sum())


# The registered metrics (plugin ``downstream``): ``(probabilities [P, C], targets) -> float``
# with targets ``[P] int`` (single-label) or ``[P, C] bool`` (multi-label); see
# :class:`protsteps.extensions.Metric`.


def _predicted(probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities)
    return p.argmax(1) if len(p) else np.zeros(0, dtype=np.int64)


def accuracy_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Single-label accuracy of the most probable class."""
    return accuracy(targets, _predicted(probabilities))


def macro_f1_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Single-label macro-F1 of the most probable class (classes present among the true or
    predicted labels)."""
    return macro_f1(targets, _predicted(probabilities), int(np.asarray(probabilities).shape[1]))


def fmax_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Multi-label protein-centric Fmax."""
    return fmax(probabilities, targets)[0]


def micro_aupr_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Multi-label micro-averaged area under the precision-recall curve."""
    return average_precision(probabilities, targets)
