"""The popularity prior of two-tower retrieval: a post's score is ``cos(u, v_j) / T + beta * log q_j``.

A two-tower trained with log-Q correction learns roughly PMI(user, post) and drops the post's popularity,
which is part of what a user engages with next; ``beta`` (the served system's ``popularity_prior``, chosen
on validation nights) adds it back at serving time without retraining. ``q_j`` is the post's add-one
smoothed share of the catalog's engagements in the feature lookback (the ``engagements_lookback`` column of
the ``items`` input), so the replay and the nightly job compute it from the same row. Since ``T`` is a
constant, the ranking is that of ``cos(u, v_j) + beta * T * log q_j``: the offset of each post is one extra
coordinate of its indexed vector, with 1 in every query, and a maximum inner product search stays exact.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PRIOR_COUNTS = "engagements_lookback"


def log_engagement_share(items: pa.Table) -> np.ndarray:
    """``log q_j`` of each row of ``items``: ``(engagements_j + 1) / (total engagements + n_posts)``.

    Raises:
        KeyError: ``items`` has no ``engagements_lookback`` column.
    """
    counts = np.nan_to_num(items.column(PRIOR_COUNTS).to_numpy(zero_copy_only=False).astype(np.float64))
    counts = np.maximum(counts, 0.0)
    return np.log((counts + 1.0) / (counts.sum() + len(counts)))


def prior_offsets(items: pa.Table, weight: float, temperature: float) -> np.ndarray | None:
    """The score offset ``weight * temperature * log q_j`` of each post (float32), added to its cosine.

    Args:
        items: the catalog rows, in index order.
        weight: ``beta``, the served system's ``popularity_prior``.
        temperature: ``T``, the two-tower's configured softmax temperature (with
            ``learnable_temperature`` the learned value is not kept with the model; the configured one
            scales the prior, and the weight chosen on validation nights absorbs the difference).

    Returns:
        The offsets, or None when ``weight`` is 0 (no prior: the index holds the plain unit vectors).
    """
    if weight == 0:
        return None
    return (weight * temperature * log_engagement_share(items)).astype(np.float32)


def with_offsets(unit_vectors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Item vectors with the offset as a last coordinate: their inner product with a query from
    :func:`with_ones` is the cosine plus the offset."""
    return np.hstack([unit_vectors, offsets.reshape(-1, 1)]).astype(np.float32, copy=False)


def with_ones(unit_queries: np.ndarray) -> np.ndarray:
    """Queries with a last coordinate of 1, to meet the offsets of :func:`with_offsets`."""
    return np.hstack([unit_queries, np.ones((len(unit_queries), 1), np.float32)]).astype(
        np.float32, copy=False
    )
