"""Exact top-k inner-product search by blocked matrix products with bounded memory: the baseline the item
index's recall is measured against. Reads and writes nothing."""

from __future__ import annotations

import itertools

import numpy as np

from pipelines.serving.vectors import check_k

# The exact baseline keeps each block of query x item scores below this size.
EXACT_BLOCK_BYTES = 64 * 2**20
EXACT_ITEM_BLOCK = 32_768


def exact_top_k(
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    block_bytes: int = EXACT_BLOCK_BYTES,
    item_block: int = EXACT_ITEM_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products by blocked matrix products, with memory bounded by ``block_bytes``.

    The catalog is scanned in blocks of ``item_block`` items against blocks of queries sized so one score
    block stays below ``block_bytes``. A small first block seeds each query's running top-k with
    ``argpartition``; later blocks only admit scores above the query's current k-th best, which soon is a
    small fraction of a block, so the matrix products and one comparison pass dominate the cost.

    Args:
        embeddings: ``(n, d)`` float32 item vectors (as given: no normalisation here).
        queries: ``(q, d)`` float32 query vectors.
        k: neighbours per query, clamped to ``n``.
        block_bytes: memory for one block of scores.
        item_block: items per block.

    Returns:
        ``(positions int64 (q, k), scores float32 (q, k))``, best first; equal scores in item order.
    """
    n = len(embeddings)
    k = check_k(k, n)
    item_block = min(n, max(item_block, k))
    query_block = max(1, block_bytes // (4 * item_block))
    seed = min(n, item_block, max(4 * k, 4096))
    bounds = [0, *range(seed, n, item_block), n]
    # Score and mask buffers are reused: fresh 64 MiB arrays per block would cost page faults each time.
    score_buffer = np.empty(query_block * item_block, np.float32)
    mask_buffer = np.empty(query_block * item_block, np.bool_)
    out_pos = np.empty((len(queries), k), np.int64)
    out_scores = np.empty((len(queries), k), np.float32)
    for q0 in range(0, len(queries), query_block):
        block = queries[q0 : q0 + query_block]
        best_scores = np.full((len(block), k), -np.inf, np.float32)
        best_pos = np.full((len(block), k), -1, np.int64)
        for i0, i1 in itertools.pairwise(bounds):
            size = len(block) * (i1 - i0)
            scores = score_buffer[:size].reshape(len(block), i1 - i0)
            np.matmul(block, embeddings[i0:i1].T, out=scores)
            admitted = mask_buffer[:size].reshape(scores.shape)
            cand_scores, cand_pos = _block_candidates(scores, best_scores.min(axis=1), k, admitted)
            if cand_scores.shape[1] == 0:
                continue
            merged_scores = np.concatenate([best_scores, cand_scores], axis=1)
            merged_pos = np.concatenate([best_pos, cand_pos + i0], axis=1)
            keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(merged_scores, keep, axis=1)
            best_pos = np.take_along_axis(merged_pos, keep, axis=1)
        order = np.lexsort((best_pos, -best_scores), axis=1)
        out_scores[q0 : q0 + len(block)] = np.take_along_axis(best_scores, order, axis=1)
        out_pos[q0 : q0 + len(block)] = np.take_along_axis(best_pos, order, axis=1)
    return out_pos, out_scores


def _block_candidates(
    scores: np.ndarray, threshold: np.ndarray, k: int, admitted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of one block that may enter the running top-k, as padded ``(rows, m)`` arrays.

    ``admitted`` is a scratch boolean array of the shape of ``scores``.
    """
    np.greater(scores, threshold[:, None], out=admitted)
    # Few admitted scores: gather them into padded rows. Many (the first blocks, or a row whose
    # neighbourhood only starts here): a per-row argpartition of the whole block is cheaper.
    if np.count_nonzero(admitted) <= admitted.size // 4:
        # 1-d nonzero skips runs of zero bytes quickly; the 2-d form is many times slower.
        rows, cols = np.divmod(np.flatnonzero(admitted), scores.shape[1])
        counts = np.bincount(rows, minlength=len(scores))
        width = int(counts.max()) if len(rows) else 0
        if width * len(scores) <= admitted.size // 4:
            slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            cand_scores = np.full((len(scores), width), -np.inf, np.float32)
            cand_pos = np.full((len(scores), width), -1, np.int64)
            cand_scores[rows, slot] = scores[rows, cols]
            cand_pos[rows, slot] = cols
            return cand_scores, cand_pos
    if scores.shape[1] <= k:
        return scores.copy(), np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, top, axis=1), top
