"""Vectorised weighted sampling helpers the world generator draws with (no state of their own)."""

from __future__ import annotations

import numpy as np


def pick_in_group(
    rng: np.random.Generator, member_group: np.ndarray, n_groups: int, wanted: np.ndarray, follow: float
) -> np.ndarray:
    """For each entry of ``wanted`` (a group), a random member of that group with probability ``follow``
    (or when the group is empty: any member)."""
    order = np.argsort(member_group, kind="stable")
    counts = np.bincount(member_group, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offset = (rng.random(len(wanted)) * np.maximum(counts[wanted], 1)).astype(np.int64)
    pick = order[np.minimum(starts[wanted] + offset, len(order) - 1)]
    anyone = rng.integers(0, len(member_group), size=len(wanted))
    return np.where((counts[wanted] > 0) & (rng.random(len(wanted)) < follow), pick, anyone)


def sample(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """``size`` indices into ``weights`` drawn with replacement in proportion to the weights."""
    cdf = np.cumsum(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(weights) - 1)


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One column index per row of ``probs``, drawn in proportion to that row."""
    cdf = np.cumsum(probs, axis=1)
    draws = rng.random((len(probs), 1)) * cdf[:, -1:]
    return np.minimum((cdf < draws).sum(axis=1), probs.shape[1] - 1)


def sample_in_group(
    rng: np.random.Generator,
    live: np.ndarray,
    weights: np.ndarray,
    live_group: np.ndarray,
    wanted: np.ndarray,
) -> np.ndarray:
    """For each entry of ``wanted`` (a group), a member of ``live`` of that group drawn by ``weights``
    (any member of ``live`` when the group has none).

    Args:
        live: the candidates (indices); ``weights`` and ``live_group`` are aligned with it.
        wanted: the group each draw should come from.

    Returns:
        One element of ``live`` per entry of ``wanted``.
    """
    out = np.empty(len(wanted), dtype=np.int64)
    for t in np.unique(wanted):
        rows = np.flatnonzero(wanted == t)
        pool = np.flatnonzero(live_group == t)
        if len(pool) == 0:
            out[rows] = live[sample(rng, weights, len(rows))]
        else:
            out[rows] = live[pool[sample(rng, weights[pool], len(rows))]]
    return out
