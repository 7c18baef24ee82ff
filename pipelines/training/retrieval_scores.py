"""The two-tower score and retrieval rank of logged (user, post) pairs: the ranker's retrieval features at
training time, computed as serving computes them, through the index the lists are retrieved from."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.tables import row_numbers

log = logging.getLogger(__name__)

# ``(queries, k) -> (positions, scores)``: the ``k`` best catalog rows of each query, best first, -1 padded.
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
# User states searched at once: the positions of a block take ``QUERY_BLOCK * depth`` int64s.
QUERY_BLOCK = 16384


def retrieval_scores_for_rows(
    embed_users: Callable[[pa.Table], np.ndarray],
    rows: pa.Table,
    catalog_ids: pa.Array | pa.ChunkedArray,
    item_vectors: np.ndarray,
    search: Search,
    depth: int,
    item_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Two-tower score and rank of each logged (user, post) row, as the ranker is trained on them.

    The user state is the row's own (features of the day before the impression), embedded once per
    (user, day). Its retrieval is ``search`` to ``depth`` (the index serving retrieves from, over
    ``item_vectors``): the rank is the post's 1-based place in it, ``depth + 1`` when the post is not
    among them, exactly as serving ranks a retrieved post. The score is one dot product per row, of the
    unit user vector and the post's vector, plus the post's prior offset (what the index scores). Nothing
    is compared against the whole catalog.

    Args:
        embed_users: the user tower, user feature rows -> vectors.
        rows: logged pairs with ``user_id``, ``ds``, ``item_id`` and the user features.
        catalog_ids: the posts ``search`` returns positions into.
        item_vectors: ``(len(catalog_ids), d)`` unit vectors the index holds.
        search: the index's search over positions of ``catalog_ids``.
        depth: the retrieval depth the ranker is trained with.
        item_offsets: the popularity prior's score offset of each catalog post, as the index adds it
            (None: no prior).

    Returns:
        ``(n_rows, 2)``: score and rank. A post missing from the catalog (deleted since) ranks
        ``depth + 1`` with the lowest score observed.
    """
    if rows.num_rows == 0:
        return np.zeros((0, 2))
    started = time.perf_counter()
    keys = pc.binary_join_element_wise(rows.column("user_id"), pc.cast(rows.column("ds"), pa.string()), "|")
    encoded = pc.dictionary_encode(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    group = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_keys = len(encoded.dictionary)
    by_key = np.argsort(group, kind="stable")
    sorted_group = group[by_key]
    first_row = by_key[np.searchsorted(sorted_group, np.arange(n_keys))]
    user_vectors = np.asarray(embed_users(rows.take(pa.array(first_row))), np.float32)
    user_vectors /= np.maximum(np.linalg.norm(user_vectors, axis=1, keepdims=True), 1e-12)
    item_row = row_numbers(rows.column("item_id"), catalog_ids, unique=True)
    score = np.full(rows.num_rows, np.nan)
    rank = np.full(rows.num_rows, depth + 1.0)
    for start in range(0, n_keys, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, n_keys)
        lo, hi = np.searchsorted(sorted_group, [start, stop])
        members = by_key[lo:hi]
        known = members[item_row[members] >= 0]
        positions, _ = search(user_vectors[start:stop], depth)
        local = group[known] - start
        score[known] = np.einsum("ij,ij->i", user_vectors[group[known]], item_vectors[item_row[known]])
        if item_offsets is not None:
            score[known] += item_offsets[item_row[known]]
        hit = positions[local] == item_row[known][:, None]
        found = hit.any(axis=1)
        rank[known[found]] = hit[found].argmax(axis=1) + 1.0
    if np.isnan(score).any():
        score[np.isnan(score)] = np.nanmin(score) if np.isfinite(score).any() else 0.0
    log.info(
        "retrieval features of %d rows (%d user-days) through the index in %.1f s",
        rows.num_rows,
        n_keys,
        time.perf_counter() - started,
    )
    return np.column_stack([score, rank])
