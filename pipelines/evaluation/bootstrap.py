"""Percentile-bootstrap confidence intervals over users: for one system's mean, and for the paired
difference of two systems scored on the same users (the users are resampled together)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def _resampled_means(values: np.ndarray, resamples: int, seed: int, chunk: int = 64) -> np.ndarray:
    """Means of ``resamples`` draws of ``len(values)`` users with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        picks = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[picks].mean(axis=1)
    return means


def bootstrap_mean(
    values: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """The mean of per-user ``values`` with a percentile-bootstrap interval.

    Raises:
        ValueError: no values, a non-finite value, or a confidence outside (0, 1).
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("a bootstrap interval needs at least one user")
    if not np.isfinite(values).all():
        raise ValueError("per-user values must be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = _resampled_means(values, resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high))


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Mean of ``a - b`` over the same users, with a percentile-bootstrap interval.

    Raises:
        ValueError: the arrays differ in length (they must be aligned user by user).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must be aligned user by user, got {a.shape} and {b.shape}")
    return bootstrap_mean(a - b, resamples, confidence, seed)
