"""The recall gate of the item index: recall@K of a freshly built index against exact brute force on
real user queries, and the error that keeps a degraded index from being published."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from pipelines.core.errors import PermanentError
from pipelines.core.settings import IndexConfig
from pipelines.serving.exact_search import exact_top_k
from pipelines.serving.vectors import check_k

if TYPE_CHECKING:
    from pipelines.serving.index import ItemIndex

log = logging.getLogger(__name__)


class IndexRecallError(PermanentError):
    """The approximate index missed too many of the exact nearest neighbours to be published."""

    def __init__(self, recall: float, min_recall: float, k: int, num_queries: int) -> None:
        super().__init__(
            f"index recall@{k} = {recall:.4f} on {num_queries} user queries is below min_recall="
            f"{min_recall:.4f}; search more leaves (leaves_to_search_fraction) or raise reorder_multiplier"
        )
        self.recall = recall
        self.min_recall = min_recall
        self.k = k
        self.num_queries = num_queries


def measure_recall(index: ItemIndex, queries: np.ndarray, k: int) -> float:
    """Mean share of each query's exact top-``k`` items that the index also returns in its top ``k``.

    Args:
        index: a freshly built index (it must still hold its embeddings).
        queries: ``(q, d)`` user query embeddings, searched like in :meth:`ItemIndex.search` (normalised,
            and met with the items' prior offsets when the index has them).
        k: neighbours compared, clamped to the catalog size.

    Raises:
        ValueError: the index has no embeddings (loaded from the lake), no queries, or bad queries.
    """
    if index.embeddings is None:
        raise ValueError("this index holds no embeddings (it was loaded); recall is measured at build time")
    if len(queries) == 0:
        raise ValueError("measuring recall needs at least one query")
    k = check_k(k, index.n_items)
    started = time.perf_counter()
    approx, _ = index.search_positions(queries, k)
    approx_seconds = time.perf_counter() - started
    exact, _ = exact_top_k(index.datapoints, index.query_vectors(queries), k)
    # Padding (-1) repeats within a row, so it must go before an intersection that assumes unique values.
    hits = sum(
        np.intersect1d(a[a >= 0], e, assume_unique=True).size for a, e in zip(approx, exact, strict=True)
    )
    recall = hits / (len(queries) * k)
    log.info(
        "recall@%d = %.4f on %d queries (index: %.0f queries/s)",
        k,
        recall,
        len(queries),
        len(queries) / max(approx_seconds, 1e-9),
    )
    return recall


def check_index(index: ItemIndex, queries: np.ndarray, config: IndexConfig) -> float:
    """Measure recall@``config.recall_k`` on up to ``config.recall_sample_queries`` queries; store it.

    Returns:
        The recall, also set on ``index.recall``.

    Raises:
        IndexRecallError: the recall is below ``config.min_recall``.
        ValueError: no queries, or bad queries.
    """
    queries = np.asarray(queries)
    if len(queries) > config.recall_sample_queries:
        rng = np.random.default_rng(config.seed)
        queries = queries[np.sort(rng.choice(len(queries), config.recall_sample_queries, replace=False))]
    k = min(config.recall_k, index.n_items)
    recall = measure_recall(index, queries, k)
    index.recall = recall
    if recall < config.min_recall:
        raise IndexRecallError(recall, config.min_recall, k, len(queries))
    return recall
