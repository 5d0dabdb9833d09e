r"""The linear probe of the evidence experiment: multinomial logistic regression on frozen
mean embeddings, its L2 strength chosen on the validation chains only.

For training embeddings :math:`x_i` (standardised with the training mean and standard
deviation), classes :math:`y_i` and class weights :math:`w_c = n / (C n_c)` (balanced),

.. math::

    \min_{W, b}\; \frac{\sum_i w_{y_i} \, \mathrm{CE}(W x_i + b, y_i)}{\sum_i w_{y_i}}
        + \frac{\lambda}{2} \lVert W \rVert^2 ,

fitted in float64 with L-BFGS (strong Wolfe line search) to a gradient tolerance of 1e-7.
:math:`\lambda` comes from :data:`L2_GRID` by validation macro-F1 (ties: the larger
:math:`\lambda`, the simpler model); the model fitted on the training chains with it scores
the test chains once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["L2_GRID", "ProbeResult", "fit_logistic", "probe"]

#: the L2 strengths tried (the design's grid)
L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """``(W [C, d], b [C])`` of the class-balanced, L2-penalised multinomial regression."""
    features = torch.as_tensor(x, dtype=torch.float64)
    targets = torch.as_tensor(y, dtype=torch.long)
    counts = torch.bincount(targets, minlength=num_classes).to(torch.float64)
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = len(y) / (int(present.sum()) * counts[present])
    weight = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = features @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, targets, weight=weights)
        loss = loss + 0.5 * l2 * (weight * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().numpy(), bias.detach().numpy()


@dataclass
class ProbeResult:
    """The chosen L2 strength, each strength's validation macro-F1, and the predictions."""

    l2: float
    valid_macro_f1: dict[float, float]
    valid_predicted: np.ndarray
    test_predicted: np.ndarray
    test_probabilities: np.ndarray


def probe(
    embeddings: np.ndarray,
    labels: np.ndarray,
    splits: Sequence[str],
    num_classes: int,
    grid: Sequence[float] = L2_GRID,
) -> ProbeResult:
    """Fit on ``train`` rows, choose the L2 strength on ``valid`` rows, predict ``test`` rows.

    ``embeddings``: ``[N, d]``; ``labels``: ``[N]`` class indices; ``splits``: one of
    train/valid/test per row.
    """
    from protsteps.downstream import macro_f1

    split = np.asarray(splits)
    train, valid, test = (split == part for part in ("train", "valid", "test"))
    mean = embeddings[train].mean(axis=0)
    std = embeddings[train].std(axis=0)
    std[std < 1e-12] = 1.0  # a constant column carries nothing; keep it at 0
    x = (embeddings - mean) / std
    scores: dict[float, float] = {}
    fitted: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for l2 in grid:
        weight, bias = fit_logistic(x[train], labels[train], num_classes, l2)
        predicted = (x[valid] @ weight.T + bias).argmax(axis=1)
        scores[l2] = macro_f1(labels[valid], predicted, num_classes)
        fitted[l2] = (weight, bias)
    chosen = max(grid, key=lambda l2: (scores[l2], l2))
    weight, bias = fitted[chosen]
    logits = x @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return ProbeResult(
        l2=chosen,
        valid_macro_f1=scores,
        valid_predicted=logits[valid].argmax(axis=1),
        test_predicted=logits[test].argmax(axis=1),
        test_probabilities=probabilities[test],
    )
