"""Offline evaluation of retrieval scorers on a :class:`Holdout`: Recall@K, NDCG@K and catalog coverage@K
per K in ``EvaluationConfig.ks``, for each model on the same hold-out so that a challenger, the champion
and the baselines are comparable.

Reads the hold-out and the scorers; writes nothing (callers store the returned dict as ``metrics.json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from pipelines.core.settings import EvaluationConfig
from pipelines.training.holdout import Holdout
from pipelines.training.metrics import catalog_coverage_at_k, ndcg_at_k, recall_at_k, top_k_indices

log = logging.getLogger(__name__)

# A scorer maps row indices of Holdout.users to a (len(rows), n_items) score matrix over Holdout.item_ids.
Scorer = Callable[[np.ndarray], np.ndarray]


def embedding_scorer(user_embeddings: np.ndarray, item_embeddings: np.ndarray) -> Scorer:
    """Dot-product scorer for a two-tower model's user and catalog embeddings.

    Raises:
        ValueError: the embedding dimensions differ.
    """
    if user_embeddings.shape[1] != item_embeddings.shape[1]:
        raise ValueError(
            f"user embeddings have dim {user_embeddings.shape[1]}, item embeddings {item_embeddings.shape[1]}"
        )

    def score(rows: np.ndarray) -> np.ndarray:
        return user_embeddings[rows] @ item_embeddings.T

    return score


def evaluate_scorer(
    scorer: Scorer, holdout: Holdout, ks: list[int], batch_users: int = 512
) -> dict[str, float]:
    """Recall@K, NDCG@K and coverage@K of one scorer on the hold-out.

    Args:
        scorer: maps hold-out user rows to scores over ``holdout.item_ids``.
        holdout: from :func:`pipelines.training.holdout.build_holdout`.
        ks: cut-offs.
        batch_users: users scored at once (bounds memory to ``batch_users * n_items`` floats).

    Returns:
        ``{"recall_at_10": ..., "ndcg_at_10": ..., "coverage_at_10": ..., ..., "n_users": ...}``.

    Raises:
        ValueError: the scorer returned a matrix of the wrong shape or with NaNs.
    """
    max_k = min(max(ks), holdout.n_items)
    recall = {k: [] for k in ks}
    ndcg = {k: [] for k in ks}
    tops = []
    for start in range(0, holdout.n_users, batch_users):
        rows = np.arange(start, min(start + batch_users, holdout.n_users))
        scores = np.array(scorer(rows), dtype=np.float64)
        if scores.shape != (len(rows), holdout.n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(rows), holdout.n_items)}")
        if np.isnan(scores).any():
            raise ValueError(f"scorer returned NaN scores for hold-out users {rows[0]}..{rows[-1]}")
        seen = holdout.seen[rows]
        scores[seen.nonzero()] = -np.inf
        top = top_k_indices(scores, max_k)
        truth = holdout.truth[rows].toarray() > 0
        hits = np.take_along_axis(truth, top, axis=1)
        n_relevant = truth.sum(axis=1)
        for k in ks:
            recall[k].append(recall_at_k(hits, n_relevant, k))
            ndcg[k].append(ndcg_at_k(hits, n_relevant, k))
        tops.append(top)
    top_all = np.concatenate(tops)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall_at_{k}"] = float(np.concatenate(recall[k]).mean())
        out[f"ndcg_at_{k}"] = float(np.concatenate(ndcg[k]).mean())
        out[f"coverage_at_{k}"] = catalog_coverage_at_k(top_all, k, holdout.n_items)
    out["n_users"] = float(holdout.n_users)
    return out


def evaluate_models(
    scorers: dict[str, Scorer], holdout: Holdout, config: EvaluationConfig
) -> dict[str, dict[str, float]]:
    """Evaluate several scorers on the same hold-out and log one line per model.

    Returns:
        ``{model_name: metrics}`` in the order given.
    """
    results: dict[str, dict[str, float]] = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        results[name] = evaluate_scorer(scorer, holdout, config.ks)
        log.info(
            "%s: %s (%.1f s)",
            name,
            ", ".join(f"{k}={v:.4f}" for k, v in results[name].items() if k != "n_users"),
            time.perf_counter() - started,
        )
    return results
