"""The two-tower score and retrieval rank of logged (user, post) pairs: the ranker's retrieval features
at training time, computed as serving computes them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def retrieval_scores_for_rows(towers: Any, rows: pa.Table, catalog: pa.Table, depth: int) -> np.ndarray:
    """Two-tower score and rank of each logged (user, post) row, as the ranker is trained on them.

    The user state is the row's own (features of the day before the impression); the rank is the post's
    1-based position in that user's retrieval over ``catalog``, capped at ``depth + 1``.

    Returns:
        ``(n_rows, 2)``: score and rank.
    """
    keys = pc.binary_join_element_wise(rows.column("user_id"), pc.cast(rows.column("ds"), pa.string()), "|")
    unique_keys, first_row, group = np.unique(
        np.asarray(keys.to_pylist(), dtype=object), return_index=True, return_inverse=True
    )
    user_vectors = towers.embed_users(rows.take(pa.array(first_row)))
    item_vectors = towers.embed_items(catalog)
    row_of_item = {it: j for j, it in enumerate(catalog.column("item_id").to_pylist())}
    item_row = np.array(
        [row_of_item.get(it, -1) for it in rows.column("item_id").to_pylist()], dtype=np.int64
    )
    score = np.full(rows.num_rows, np.nan)
    rank = np.full(rows.num_rows, depth + 1.0)
    # Only ranks up to ``depth`` matter, so each user's scores are partitioned once (O(catalog)) and a
    # row compares against that user's top ``depth`` scores, never against the whole catalog per row.
    top_n = min(depth, len(item_vectors))
    by_user = np.argsort(group, kind="stable")
    sorted_group = group[by_user]
    block = max(1, 2**24 // max(len(item_vectors), 1))
    for start in range(0, len(unique_keys), block):
        lo, hi = np.searchsorted(sorted_group, [start, start + block])
        members = by_user[lo:hi]
        known = members[item_row[members] >= 0]
        if len(known) == 0:
            continue
        scores = user_vectors[start : start + block] @ item_vectors.T
        local = group[known] - start
        own = scores[local, item_row[known]]
        score[known] = own
        scores.partition(scores.shape[1] - top_n, axis=1)
        top = scores[:, -top_n:]
        above = (top[local] > own[:, None]).sum(axis=1)
        # Below the user's top_n-th score at least depth posts outrank it: it ranks past the cap.
        beyond = own < top.min(axis=1)[local]
        rank[known] = np.where(beyond, depth + 1, np.minimum(above + 1, depth + 1))
    if np.isnan(score).any():
        # Posts missing from the catalog (deleted since) rank last with the lowest observed score.
        score[np.isnan(score)] = np.nanmin(score) if np.isfinite(score).any() else 0.0
    return np.column_stack([score, rank])
