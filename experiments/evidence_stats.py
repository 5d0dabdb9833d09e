"""Statistics of the evidence experiment: paired differences over (pretraining seed, split
seed) cells, a hierarchical bootstrap for their intervals, and Holm's correction.

A result is a ``[P, S]`` array: one value per pretraining seed (rows) and split seed
(columns). A paired difference of two settings is the element-wise difference of their
arrays, so every cell compares the two settings on the same split and, where both depend on
it, the same pretraining seed.

The hierarchical bootstrap resamples the two levels in turn: draw P rows with replacement,
then for each drawn row draw S of its columns with replacement, and take the mean of the
drawn cells. Its percentiles give the interval; the share of resampled means on either side
of zero gives a two-sided p-value, used only for Holm's correction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "BOOTSTRAP_SAMPLES",
    "Interval",
    "bootstrap_p",
    "compare_family",
    "hierarchical_bootstrap",
    "holm",
    "summarise",
]

#: resamples of the hierarchical bootstrap (the design's B)
BOOTSTRAP_SAMPLES = 10_000


def hierarchical_bootstrap(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """``[samples]`` resampled means of ``values`` (``[P, S]``): rows drawn with replacement,
    then within each drawn row its columns drawn with replacement.

    NaN cells (a metric undefined on a split) are left out of each resampled mean; a
    resample whose cells are all NaN gives NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"values must be a non-empty [P, S] array, got shape {values.shape}")
    rows, columns = values.shape
    rng = np.random.default_rng(seed)
    drawn_rows = rng.integers(0, rows, size=(samples, rows))
    drawn_columns = rng.integers(0, columns, size=(samples, rows, columns))
    cells = values[drawn_rows[:, :, None], drawn_columns]  # [samples, P, S]
    flat = cells.reshape(samples, -1)
    valid = ~np.isnan(flat)
    counts = valid.sum(axis=1)
    sums = np.where(valid, flat, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def bootstrap_p(means: np.ndarray) -> float:
    """Two-sided p-value of "the mean is 0" from resampled means:
    ``min(1, 2 min(lo, hi))`` with ``lo = (1 + #{m <= 0}) / (B + 1)`` and
    ``hi = (1 + #{m >= 0}) / (B + 1)``."""
    means = np.asarray(means, dtype=np.float64)
    means = means[~np.isnan(means)]
    total = means.size + 1
    lo = (1 + int(np.sum(means <= 0))) / total
    hi = (1 + int(np.sum(means >= 0))) / total
    return min(1.0, 2 * min(lo, hi))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order: for the ascending p_(1..m),
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with its 95% hierarchical bootstrap interval (and p, for differences)."""

    mean: float
    low: float
    high: float
    p: float
    cells: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def summarise(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Interval:
    """The mean of ``values`` (``[P, S]``, NaN cells left out), its 95% percentile interval
    and the bootstrap p-value of "the mean is 0"."""
    values = np.asarray(values, dtype=np.float64)
    means = hierarchical_bootstrap(values, samples, seed)
    finite = means[~np.isnan(means)]
    low, high = (float(q) for q in np.percentile(finite, [2.5, 97.5])) if finite.size else (np.nan, np.nan)
    return Interval(
        mean=float(np.nanmean(values)),
        low=low,
        high=high,
        p=bootstrap_p(means),
        cells=int(np.sum(~np.isnan(values))),
    )


def compare_family(
    differences: Mapping[str, np.ndarray], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict[str, dict[str, float | int]]:
    """Each named paired difference summarised, with its Holm-adjusted p over the family."""
    named = {name: summarise(values, samples, seed) for name, values in differences.items()}
    adjusted = holm([interval.p for interval in named.values()])
    return {
        name: {**interval.as_dict(), "p_holm": p, "holds": p < 0.05}
        for (name, interval), p in zip(named.items(), adjusted, strict=True)
    }
