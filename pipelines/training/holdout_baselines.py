"""The hold-out baselines every retrieval model must beat, as scorers over a :class:`Holdout`.

* ``most_popular``: engagement counts in the ``popularity_window_days`` before the eval window;
* ``item_knn``: item-item cosine similarity on the binary user-item matrix of the training window, a user
  scored by the sum of similarities to the posts they engaged with (ties and cold users fall back to
  popularity).

Reads the hold-out only; writes nothing.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipelines.core.settings import EvaluationConfig
from pipelines.training.evaluation import Scorer
from pipelines.training.holdout import Holdout


def popularity_scorer(holdout: Holdout) -> Scorer:
    """Most-popular baseline: the same recent-popularity ranking for everyone."""
    scores = holdout.popularity.astype(np.float64)

    def score(rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(scores, (len(rows), len(scores))).copy()

    return score


def item_knn_scorer(holdout: Holdout, neighbors: int) -> Scorer:
    """Item-kNN baseline on the training user-item matrix.

    ``sim[i, j] = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` (cosine of binary item columns), keeping each item's
    ``neighbors`` most similar items; a user scores item ``j`` as ``sum_i seen[u, i] * sim[i, j]``. A
    popularity term scaled far below the smallest similarity breaks ties, so users with no training
    engagements get the most-popular list.
    """
    x = holdout.train_matrix.tocsc().astype(np.float64)
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    co = (x.T @ x).tocsr()
    sim = sp.diags(inv) @ co @ sp.diags(inv)
    sim = sim.tolil()
    sim.setdiag(0.0)
    sim = _keep_top_per_row(sim.tocsr(), neighbors)
    pop = holdout.popularity / max(holdout.popularity.max(), 1.0)
    smallest = sim.data[sim.data > 0].min() if sim.nnz else 1.0
    tie_break = pop * smallest * 1e-3

    def score(rows: np.ndarray) -> np.ndarray:
        return np.asarray((holdout.seen[rows] @ sim).todense()) + tie_break

    return score


def _keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    matrix = matrix.copy()
    matrix.eliminate_zeros()
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if end - start > k:
            row = matrix.data[start:end]
            cut = np.argpartition(-row, k - 1)[k:]
            row[cut] = 0.0
    matrix.eliminate_zeros()
    return matrix


def baseline_scorers(holdout: Holdout, config: EvaluationConfig) -> dict[str, Scorer]:
    return {
        "most_popular": popularity_scorer(holdout),
        "item_knn": item_knn_scorer(holdout, config.knn_neighbors),
    }
