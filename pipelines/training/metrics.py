"""Ranking metrics in pure numpy: top-k selection, Recall@K, NDCG@K with binary gains over ranked hits,
NDCG@K with graded gains over query groups, average precision and catalog coverage.

Reads and writes nothing; the hold-out evaluation and the ranker's evaluation call these.
"""

from __future__ import annotations

import numpy as np


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores per row, best first; ties go to the lower index.

    Args:
        scores: (n_rows, n_items) float scores; ``-inf`` marks items that must never be returned first.
        k: how many per row; capped at ``n_items``.

    Returns:
        (n_rows, min(k, n_items)) int64 array.

    Raises:
        ValueError: ``scores`` is not 2-D or ``k`` < 1.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_items = scores.shape[1]
    k = min(k, n_items)
    if k < n_items:
        # argpartition keeps the top k in arbitrary order; a stable sort of the negated scores then orders
        # them, breaking ties by the smaller column index.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part.sort(axis=1)
    else:
        part = np.tile(np.arange(n_items), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user recall: relevant items in the first ``k`` over all relevant items.

    Args:
        hits: (n_users, >=k) bool, ``hits[u, r]`` is whether the item at rank ``r`` is relevant.
        n_relevant: (n_users,) number of relevant items per user (> 0).
        k: cut-off.
    """
    return hits[:, :k].sum(axis=1) / n_relevant


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG with binary gains: DCG of the first ``k`` over the DCG of a perfect ranking.

    Args:
        hits: (n_users, >=k) bool hits by rank.
        n_relevant: (n_users,) number of relevant items per user (> 0).
        k: cut-off.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return dcg / ideal


def catalog_coverage_at_k(top: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalog that appears in at least one user's first ``k``."""
    return len(np.unique(top[:, :k])) / n_items


def _group_positions(scores: np.ndarray, group: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Order of rows by (group, score descending, row), and each row's 0-based position in its group."""
    order = np.lexsort((-scores, group))
    position = np.arange(len(order)) - starts[group[order]]
    return order, position


def _check_groups(labels: np.ndarray, group_sizes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    group_sizes = np.asarray(group_sizes, dtype=np.int64)
    if group_sizes.sum() != len(labels) or len(scores) != len(labels) or (group_sizes < 1).any():
        raise ValueError(
            f"group sizes sum to {group_sizes.sum()} (all must be >= 1), labels have {len(labels)} rows, "
            f"scores {len(scores)}"
        )
    return group_sizes


def graded_ndcg_at_k(labels: np.ndarray, scores: np.ndarray, group_sizes: np.ndarray, k: int) -> np.ndarray:
    """Per-group NDCG@k with graded gains ``2**label - 1`` (the gains lambdarank optimises).

    Rows of one group are consecutive; within a group, rows are ordered by ``scores`` descending, ties
    keeping row order. DCG sums ``gain / log2(position + 1)`` over the first ``k`` positions; NDCG divides
    it by the DCG of the labels sorted best first. With 0/1 labels this equals the binary NDCG of
    :func:`ndcg_at_k`.

    Args:
        labels: (n,) non-negative graded relevance.
        scores: (n,) model scores.
        group_sizes: rows per group, in row order.
        k: cut-off (>= 1).

    Returns:
        (n_groups,) NDCG in [0, 1].

    Raises:
        ValueError: sizes disagree, ``k`` < 1, or a group has no positive label (NDCG is undefined).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels = np.asarray(labels, dtype=np.float64)
    sizes = _check_groups(labels, group_sizes, np.asarray(scores))
    group = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gain = np.exp2(labels) - 1.0

    def dcg(order_scores: np.ndarray) -> np.ndarray:
        order, position = _group_positions(order_scores, group, starts)
        discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
        return np.bincount(group[order], weights=gain[order] * discount, minlength=len(sizes))

    ideal = dcg(labels)
    empty = np.flatnonzero(ideal <= 0)
    if len(empty):
        raise ValueError(f"group {empty[0]} has no positive label; NDCG is undefined for it")
    return dcg(np.asarray(scores, dtype=np.float64)) / ideal


def average_precision(labels: np.ndarray, scores: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """Per-group average precision over the whole group, a row being relevant when its label is > 0.

    Raises:
        ValueError: sizes disagree or a group has no relevant row.
    """
    relevant = np.asarray(labels) > 0
    sizes = _check_groups(relevant, group_sizes, np.asarray(scores))
    group = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order, position = _group_positions(np.asarray(scores, dtype=np.float64), group, starts)
    rel = relevant[order].astype(np.float64)
    cum = np.cumsum(rel)
    before_group = np.concatenate([[0.0], cum])[starts]
    hits_so_far = cum - before_group[group[order]]
    n_relevant = np.bincount(group, weights=relevant.astype(np.float64), minlength=len(sizes))
    empty = np.flatnonzero(n_relevant == 0)
    if len(empty):
        raise ValueError(f"group {empty[0]} has no relevant row; average precision is undefined for it")
    precision_sum = np.bincount(
        group[order], weights=rel * hits_so_far / (position + 1), minlength=len(sizes)
    )
    return precision_sum / n_relevant
