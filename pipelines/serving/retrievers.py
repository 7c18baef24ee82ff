"""Retrievers: the first stage of a list, the top-N posts of the catalog for a batch of users.

Every retriever works in two steps, so the lists can compute the next batch's queries and search in a
background thread: ``queries(users)`` (user tower embeddings, folded-in ALS factors, history rows) and
``search(queries, top_n)`` (positions into the catalog rows, padded with -1, and scores, best first).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipelines.core.settings import IndexConfig
from pipelines.core.tables import row_numbers
from pipelines.serving.exact_search import exact_top_k
from pipelines.serving.index import ItemIndex, build_scann_index, tree_threshold
from pipelines.serving.recall import IndexRecallError
from pipelines.training.als import AlsModel
from pipelines.training.interactions import interaction_matrix
from pipelines.training.item_knn import best_per_row, fit_item_knn, knn_scores
from pipelines.training.popularity import popularity_scores

log = logging.getLogger(__name__)


class Retriever(Protocol):
    """Top-N catalog posts for users, in two steps (see the module docstring)."""

    def queries(self, users: pa.Table) -> Any: ...

    def search(self, queries: Any, top_n: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class EmbeddingRetriever:
    """Users embedded by a function (the user tower), posts found by a vector search (the index)."""

    embed_users: Callable[[pa.Table], np.ndarray]
    search_vectors: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

    def queries(self, users: pa.Table) -> np.ndarray:
        return self.embed_users(users)

    def search(self, queries: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_vectors(queries, top_n)


@dataclass
class UserHistory:
    """Engagement counts of the served users: row ``u`` of ``counts`` is ``user_ids[u]``, columns are
    ``item_ids`` (every post engaged with in the history window, catalog or not)."""

    user_ids: pa.Array
    item_ids: pa.Array
    counts: sp.csr_matrix

    @classmethod
    def from_interactions(cls, interactions: pa.Table) -> UserHistory:
        """From ``user_id, item_id, event_ts, n_events`` rows (the ``interactions`` input)."""
        items = interactions.column("item_id").unique().sort()
        matrix = interaction_matrix(interactions, items)
        return cls(matrix.user_ids, items, matrix.counts)

    def rows(self, users: pa.Table) -> sp.csr_matrix:
        """The history rows of ``users`` (empty rows for users without engagements)."""
        found = row_numbers(users.column("user_id"), self.user_ids, unique=True)
        picked = self.counts[np.maximum(found, 0)]
        return sp.diags((found >= 0).astype(np.float32)) @ picked

    def columns_in(self, item_ids: pa.Array) -> np.ndarray:
        """The history column of each post of ``item_ids``, -1 for posts nobody engaged with."""
        return row_numbers(item_ids, self.item_ids, unique=True)


def _catalog_slice(history_columns: np.ndarray, n_history: int) -> sp.csr_matrix:
    """(history posts x catalog posts) 0/1 selection: catalog post ``j`` is history column ``c[j]``."""
    known = np.flatnonzero(history_columns >= 0)
    return sp.csr_matrix(
        (np.ones(len(known), np.float32), (history_columns[known], known)),
        shape=(n_history, len(history_columns)),
    )


@dataclass
class PopularityRetriever:
    """The same list for everyone: the catalog by recent engagement, most popular first."""

    scores: np.ndarray

    @classmethod
    def fit(
        cls, interactions: pa.Table, catalog_ids: pa.Array, as_of: dt.datetime, window_days: int | None
    ) -> PopularityRetriever:
        return cls(popularity_scores(interactions, catalog_ids, as_of, window_days))

    def queries(self, users: pa.Table) -> int:
        return users.num_rows

    def search(self, queries: int, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-self.scores, kind="stable")[:top_n]
        positions = np.tile(order, (queries, 1))
        return positions, np.tile(self.scores[order].astype(np.float32), (queries, 1))


@dataclass
class ItemKnnRetriever:
    """Posts similar to the user's history, among the catalog (see :mod:`pipelines.training.item_knn`)."""

    history: UserHistory
    sims: sp.csr_matrix  # (history posts x catalog posts)

    @classmethod
    def fit(cls, history: UserHistory, catalog_ids: pa.Array, neighbors: int) -> ItemKnnRetriever:
        engaged = history.counts.copy()
        engaged.data[:] = 1.0
        sims = fit_item_knn(engaged, neighbors)
        selection = _catalog_slice(history.columns_in(catalog_ids), len(history.item_ids))
        return cls(history, (sims @ selection).tocsr())

    def queries(self, users: pa.Table) -> sp.csr_matrix:
        rows = self.history.rows(users)
        rows.data[:] = 1.0
        return rows

    def search(self, queries: sp.csr_matrix, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        return best_per_row(knn_scores(queries, self.sims), top_n)


@dataclass
class AlsRetriever:
    """Users folded in against the ALS post factors, posts found by inner-product search: exact for a
    small catalog, a ScaNN tree over the factors (:func:`pipelines.serving.index.build_scann_index`, raw
    inner products, searched leaves scored exactly) for a large one, checked against exact search on the
    folded-in vectors of a sample of the users; below ``IndexConfig.min_recall`` the search stays exact.

    A replayed night builds the tree in memory; a served night searches the tree the index stage built
    and published once for every shard (:func:`pipelines.serving.index_store.index_items`), or exactly.
    """

    history: UserHistory
    model: AlsModel
    history_to_model: sp.csr_matrix  # (history posts x model posts) selection
    catalog_rows: np.ndarray  # catalog row of each searchable post
    factors: np.ndarray  # factors of the searchable posts
    index: ItemIndex | None = None  # over ``factors``; None: exact search

    @classmethod
    def build(
        cls,
        history: UserHistory,
        model: AlsModel,
        catalog_ids: pa.Array,
        index_config: IndexConfig,
        index: ItemIndex | None = None,
        build_tree: bool = True,
    ) -> AlsRetriever:
        """The retriever of ``history``'s users over the posts of ``catalog_ids`` that ``model`` knows.

        Args:
            index: a tree built over these posts' factors (the published one of the night); searched as
                it is, or not at all (exact search, with a warning) when it holds other posts.
            build_tree: without ``index``, build and check a tree when the searchable posts number
                :func:`~pipelines.serving.index.tree_threshold` or more (a replay); False searches exactly
                (a shard whose night published no tree).
        """
        model_of_history = row_numbers(history.item_ids, model.item_ids, unique=True)
        known = np.flatnonzero(model_of_history >= 0)
        to_model = sp.csr_matrix(
            (np.ones(len(known), np.float32), (known, model_of_history[known])),
            shape=(len(history.item_ids), len(model.item_ids)),
        )
        model_of_catalog = row_numbers(catalog_ids, model.item_ids, unique=True)
        searchable = np.flatnonzero(model_of_catalog >= 0)
        factors = model.item_factors[model_of_catalog[searchable]]
        retriever = cls(history, model, to_model, searchable, factors)
        if index is not None:
            if np.array_equal(np.asarray(index.item_ids, object), retriever.searchable_ids(catalog_ids)):
                retriever.index = index
            else:  # left from an earlier run of the night over another catalog
                log.warning(
                    "ALS retrieval searches exactly: the published ALS tree holds %d posts, not the %d "
                    "posts of this catalog the ALS model knows, in their order",
                    index.n_items,
                    len(searchable),
                )
        elif build_tree and len(searchable) >= tree_threshold(index_config):
            retriever.index = retriever._checked_index(index_config, retriever.searchable_ids(catalog_ids))
        return retriever

    def searchable_ids(self, catalog_ids: pa.Array) -> np.ndarray:
        """The ids of the posts searched (the catalog's posts the model knows), in factor order."""
        return np.asarray(catalog_ids.take(pa.array(self.catalog_rows)).to_pylist(), dtype=object)

    def _checked_index(self, config: IndexConfig, ids: np.ndarray) -> ItemIndex | None:
        """A ScaNN tree over the factors, or None when its recall on a sample of the users is too low."""
        with_history = np.flatnonzero(np.diff(self.history.counts.indptr) > 0)
        rng = np.random.default_rng(config.seed)
        size = min(len(with_history), config.recall_sample_queries)
        sample = np.sort(rng.choice(with_history, size, replace=False))
        queries = self.model.user_vectors((self.history.counts[sample] @ self.history_to_model).tocsr())
        try:
            checked = queries if len(queries) else None
            return build_scann_index(ids, self.factors, config, checked, normalize=False, exact_leaves=True)
        except IndexRecallError as error:
            log.warning("ALS retrieval searches exactly: its ScaNN tree failed the recall check (%s)", error)
            return None

    def queries(self, users: pa.Table) -> np.ndarray:
        return self.model.user_vectors((self.history.rows(users) @ self.history_to_model).tocsr())

    def search(self, queries: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.catalog_rows) == 0:
            return np.full((len(queries), top_n), -1, np.int64), np.full((len(queries), top_n), -np.inf)
        queries = np.ascontiguousarray(queries, np.float32)
        if self.index is None:
            positions, scores = exact_top_k(self.factors, queries, top_n)
        else:
            positions, scores = self.index.search_positions(queries, top_n)
            scores = np.where(positions >= 0, scores, -np.inf).astype(np.float32)
        mapped = np.where(positions >= 0, self.catalog_rows[np.maximum(positions, 0)], -1)
        if mapped.shape[1] < top_n:
            pad = top_n - mapped.shape[1]
            mapped = np.pad(mapped, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return mapped, scores
