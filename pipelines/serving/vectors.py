"""Embedding and query arrays for the item index: checks that name the offending rows or ids, L2
normalisation, and the item embeddings table (``item_id``, ``embedding list<float32>``) as arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.tables import require_columns


def _as_float32_matrix(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (rows, dim), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {values.dtype}")
    return np.ascontiguousarray(values, dtype=np.float32)


def _first_rows(mask: np.ndarray, limit: int = 5) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:limit]]


def check_item_inputs(
    item_ids: np.ndarray, embeddings: np.ndarray, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Check the ids and vectors of a catalog to index and L2-normalise the vectors.

    Args:
        item_ids: ``(n,)`` item ids; row ``j`` of ``embeddings`` is ``item_ids[j]``.
        embeddings: ``(n, d)`` float item vectors.
        normalize: L2-normalise the vectors (cosine search); False keeps them as they are (inner
            products, where an all-zero vector is allowed: it scores 0).

    Returns:
        ``(item_ids as str, float32 vectors)``, unit vectors when ``normalize``.

    Raises:
        ValueError: bad shapes or dtype, an empty catalog, empty or duplicate ids, NaN, infinite or
            (when normalising) all-zero vectors (the message names the rows or ids).
    """
    embeddings = _as_float32_matrix("embeddings", embeddings)
    item_ids = np.asarray(item_ids)
    if item_ids.ndim != 1:
        raise ValueError(f"item_ids must be 1-d, got shape {item_ids.shape}")
    if len(item_ids) != len(embeddings):
        raise ValueError(f"{len(item_ids)} item_ids but {len(embeddings)} embedding rows")
    if len(item_ids) == 0:
        raise ValueError("cannot index an empty catalog: no item embeddings")
    if embeddings.shape[1] == 0:
        raise ValueError("embeddings have zero dimensions")
    not_str = [i for i, v in enumerate(item_ids.tolist()) if not isinstance(v, str) or not v]
    if not_str:
        raise ValueError(
            f"item_ids must be non-empty strings; rows {not_str[:5]} hold {item_ids[not_str[:5]].tolist()}"
        )
    item_ids = item_ids.astype(str)
    unique, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1][:5].tolist()
        rows = {d: _first_rows(item_ids == d) for d in dupes}
        raise ValueError(f"duplicate item_ids (id: rows): {rows}")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        rows = _first_rows(bad)
        raise ValueError(
            f"embeddings hold NaN or infinite values in {int(bad.sum())} rows, e.g. rows {rows} "
            f"(items {item_ids[rows].tolist()})"
        )
    if not normalize:
        return item_ids, embeddings
    norms = np.linalg.norm(embeddings, axis=1)
    zero = norms == 0
    if zero.any():
        rows = _first_rows(zero)
        raise ValueError(
            f"{int(zero.sum())} item embeddings are all zeros and have no direction, e.g. rows {rows} "
            f"(items {item_ids[rows].tolist()})"
        )
    return item_ids, embeddings / norms[:, None]


def normalize_queries(queries: np.ndarray, dim: int, normalize: bool = True) -> np.ndarray:
    """Check ``queries`` is a finite ``(q, dim)`` float array and return it as float32, L2-normalised
    unless ``normalize`` is False.

    Raises:
        ValueError: wrong shape or dtype, or NaN/infinite values (the message names the rows).
    """
    queries = _as_float32_matrix("queries", queries)
    if queries.shape[1] != dim:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the index has {dim}")
    bad = ~np.isfinite(queries).all(axis=1)
    if bad.any():
        raise ValueError(f"queries hold NaN or infinite values in rows {_first_rows(bad)}")
    if not normalize:
        return queries
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    return queries / np.where(norms > 0, norms, 1.0)


def check_k(k: int, n_items: int) -> int:
    """``k`` neighbours per query, clamped to the ``n_items`` of the catalog.

    Raises:
        ValueError: ``k`` is below 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(int(k), n_items)


def embeddings_from_table(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Split an item embeddings table into ``(item_ids, (n, d) float32 matrix)``.

    Raises:
        ValueError: missing columns, null ids or vectors, non-float vectors, or vectors of unequal length
            (the message names the rows).
    """
    require_columns(table, ("item_id", "embedding"), "embeddings table")
    ids = table.column("item_id").combine_chunks()
    vectors = table.column("embedding").combine_chunks()
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        raise ValueError(f"embeddings column item_id must be strings, got {ids.type}")
    list_type = vectors.type
    is_list = pa.types.is_list(list_type) or pa.types.is_large_list(list_type)
    if not (is_list or pa.types.is_fixed_size_list(list_type)) or not pa.types.is_floating(
        list_type.value_type
    ):
        raise ValueError(f"embeddings column embedding must be list<float32>, got {list_type}")
    for name, column in (("item_id", ids), ("embedding", vectors)):
        if column.null_count:
            rows = _first_rows(column.is_null().to_numpy(zero_copy_only=False))
            raise ValueError(f"embeddings table has null {name} in rows {rows}")
    item_ids = np.asarray(ids.to_pylist(), dtype=object)
    if len(vectors) == 0:
        return item_ids, np.empty((0, 0), np.float32)
    lengths = pc.list_value_length(vectors).to_numpy()
    uneven = lengths != lengths[0]
    if uneven.any():
        rows = _first_rows(uneven)
        raise ValueError(
            f"embedding vectors differ in length: row 0 has {lengths[0]}, rows {rows} have "
            f"{lengths[rows].tolist()} (items {item_ids[rows].tolist()})"
        )
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return item_ids, flat.reshape(len(vectors), int(lengths[0]))
