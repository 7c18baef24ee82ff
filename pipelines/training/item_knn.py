"""The item-kNN baseline: posts similar to the ones a user engaged with, by who engaged with both.

Similarity is the cosine of two posts' binary user columns, ``|U_i ∩ U_j| / sqrt(|U_i| |U_j|)``, kept for
each post's ``neighbors`` most similar posts only (a sparse matrix, never a dense block). A user scores
post ``j`` with the sum of ``sim(i, j)`` over the posts ``i`` in their history.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``matrix`` with only each row's ``k`` largest values (ties keep the lower column)."""
    matrix = matrix.tocsr(copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    kept = order[rank < k]
    return sp.csr_matrix(
        (matrix.data[kept], (rows[kept], matrix.indices[kept])), shape=matrix.shape, dtype=matrix.dtype
    )


def fit_item_knn(engaged: sp.csr_matrix, neighbors: int) -> sp.csr_matrix:
    """Item-item cosine similarities from a binary user x post matrix, top ``neighbors`` per post.

    Args:
        engaged: (users x posts) 1 where the user engaged with the post.
        neighbors: similar posts kept per post.

    Returns:
        (posts x posts) sparse similarities; row ``i`` holds post ``i``'s neighbours, the diagonal is 0.

    Raises:
        ValueError: ``neighbors`` below 1.
    """
    if neighbors < 1:
        raise ValueError(f"neighbors must be at least 1, got {neighbors}")
    x = engaged.tocsc().astype(np.float64)
    co = (x.T @ x).tocsr()
    norms = np.sqrt(co.diagonal())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    sims = (sp.diags(inverse) @ co @ sp.diags(inverse)).tocsr()
    sims.setdiag(0.0)
    return top_per_row(sims, neighbors).astype(np.float32)


def knn_scores(history: sp.csr_matrix, sims: sp.csr_matrix) -> sp.csr_matrix:
    """(users x posts) scores: the sum of the similarities of each post to the user's history posts."""
    return (history.astype(np.float32) @ sims).tocsr()


def best_per_row(scores: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n`` best columns and scores, best first; rows with fewer are padded with -1 / -inf."""
    best = top_per_row(scores, n)
    rows = np.repeat(np.arange(best.shape[0]), np.diff(best.indptr))
    order = np.lexsort((best.indices, -best.data, rows))
    rank = np.arange(len(order)) - best.indptr[rows[order]]
    positions = np.full((best.shape[0], n), -1, np.int64)
    values = np.full((best.shape[0], n), -np.inf, np.float32)
    positions[rows[order], rank] = best.indices[order]
    values[rows[order], rank] = best.data[order]
    return positions, values
