"""Item index test data: item ids, clustered items and queries, embeddings tables and index configs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.core.settings import IndexConfig

DS = dt.date(2026, 11, 22)
EXACT = IndexConfig(brute_force_below=10**9)
TREE = IndexConfig(brute_force_below=0)
# One leaf of ~82 searched and no exact re-scoring: misses most neighbours on the clustered fixture.
BAD_TREE = IndexConfig(brute_force_below=0, leaves_to_search_fraction=0.001, reorder_multiplier=0)


def ids_for(n: int) -> np.ndarray:
    return np.array([f"item-{i:05d}" for i in range(n)])


def clustered(n: int, dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries around the same random unit centres (within-cluster cosine about 0.9)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        points = centres[rng.integers(n_clusters, size=m)] + 0.35 * rng.standard_normal((m, dim)) / np.sqrt(
            dim
        )
        return points.astype(np.float32)

    return draw(n), draw(200)


def table_of(ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    return pa.table(
        {"item_id": pa.array(ids.tolist()), "embedding": pa.array(vectors.tolist(), pa.list_(pa.float32()))}
    )


def good_vectors(n: int = 4) -> np.ndarray:
    return np.eye(n, 3, dtype=np.float32) + 0.5
