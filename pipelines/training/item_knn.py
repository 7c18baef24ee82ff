"""The item-kNN baseline: posts similar to the ones a user engaged with, by who engaged with both.

Similarity is the cosine of two posts' binary user columns, ``|U_i ∩ U_j| / sqrt(|U_i| |U_j|)``, kept for
each post's ``neighbors`` most similar posts only (a sparse matrix, never a dense block). The co-occurrence
product is computed for blocks of posts sized by a bound on its entries, so memory stays flat whatever the
catalog. A user scores post ``j`` with the sum of ``sim(i, j)`` over the posts ``i`` in their history.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Co-occurrence entries computed at once (a bound; blocks of posts): a block with its similarities and
# their sort takes about half a GB.
PRODUCT_BLOCK_ENTRIES = 1 << 23


def top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``matrix`` with only each row's ``k`` largest values (ties keep the lower column)."""
    matrix = matrix.tocsr(copy=True)
    matrix.sum_duplicates()  # also sorts each row's columns, which the stable sorts below keep for ties
    matrix.eliminate_zeros()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.argsort(-matrix.data, kind="stable")
    order = order[np.argsort(rows[order], kind="stable")]
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    kept = order[rank < k]
    return sp.csr_matrix(
        (matrix.data[kept], (rows[kept], matrix.indices[kept])), shape=matrix.shape, dtype=matrix.dtype
    )


def fit_item_knn(
    engaged: sp.csr_matrix, neighbors: int, block_entries: int = PRODUCT_BLOCK_ENTRIES
) -> sp.csr_matrix:
    """Item-item cosine similarities from a binary user x post matrix, top ``neighbors`` per post.

    Args:
        engaged: (users x posts) 1 where the user engaged with the post.
        neighbors: similar posts kept per post.
        block_entries: a bound on the co-occurrence entries computed at once (blocks of posts).

    Returns:
        (posts x posts) sparse similarities; row ``i`` holds post ``i``'s neighbours, the diagonal is 0.

    Raises:
        ValueError: ``neighbors`` below 1.
    """
    if neighbors < 1:
        raise ValueError(f"neighbors must be at least 1, got {neighbors}")
    x = engaged.tocsr().astype(np.float64)
    x.sum_duplicates()
    n_posts = x.shape[1]
    by_post = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    # Post i's row of the product has at most as many entries as its users have engagements.
    post_of_entry = np.repeat(np.arange(n_posts), np.diff(by_post.indptr))
    bound = np.bincount(post_of_entry, weights=np.diff(x.indptr)[by_post.indices], minlength=n_posts)
    ends = np.cumsum(bound)
    parts, start = [sp.csr_matrix((0, n_posts), dtype=np.float64)], 0
    while start < n_posts:
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] - bound[start] + block_entries, "right")))
        sims = (by_post[start:stop] @ x).tocsr()
        rows = np.repeat(np.arange(stop - start), np.diff(sims.indptr))
        # Cosine: each count scaled by its row's, then its column's inverse norm.
        sims.data = inverse[start:stop][rows] * sims.data * inverse[sims.indices]
        sims.data[sims.indices == rows + start] = 0.0  # a post is not its own neighbour
        parts.append(top_per_row(sims, neighbors))
        start = stop
    return sp.vstack(parts, format="csr").astype(np.float32)


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
