"""The retriever a served system names, built for one catalog: the same code serves a published night and
a replayed one."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pyarrow as pa

from pipelines.core.model_settings import ALS_RETRIEVER, KNN_RETRIEVER, POPULAR_RETRIEVER, TWO_TOWER_RETRIEVER
from pipelines.core.paths import ALS, TWO_TOWER
from pipelines.core.settings import IndexConfig
from pipelines.serving.blend import BlendRetriever
from pipelines.serving.index import ItemIndex, build_scann_index
from pipelines.serving.model_store import ModelStore
from pipelines.serving.prior import prior_offsets
from pipelines.serving.retrievers import (
    AlsRetriever,
    EmbeddingRetriever,
    ItemKnnRetriever,
    PopularityRetriever,
    Retriever,
    UserHistory,
)
from pipelines.serving.system import ServedSystem


def make_retriever(
    system: ServedSystem,
    models: ModelStore,
    items: pa.Table,
    item_vectors: np.ndarray,
    interactions: pa.Table | None,
    as_of: dt.datetime,
    index_config: IndexConfig,
    index: ItemIndex | None = None,
    als_index: ItemIndex | None = None,
    build_als_tree: bool = True,
) -> Retriever:
    """The retriever of ``system`` over the catalog ``items`` (its two retrievers blended, for a blend).

    Args:
        system: what is served.
        models: where the system's models come from.
        items: the catalog rows (the ``items`` input).
        item_vectors: the two-tower item embeddings of ``items``, row by row.
        interactions: the ``interactions`` input (user histories, recent engagement counts); the
            two-tower reads none.
        as_of: the end of the served day (popularity windows end here).
        index_config: how to build the vector index when none is given.
        index: the published index over ``item_vectors`` (built in memory when None, with the system's
            popularity prior).
        als_index: the published tree over the ALS post factors of ``items``, searched as it is.
        build_als_tree: without ``als_index``, build a tree for ALS over a large catalog (a replay); False
            searches the ALS factors exactly (a night whose index stage published no ALS tree).

    Raises:
        ValueError: an unknown retriever, no ``interactions`` for a retriever that reads them, or a given
            ``index`` built with or without a popularity prior when the system wants the other.
    """
    catalog_ids = items.column("item_id").combine_chunks()

    @functools.cache
    def history() -> UserHistory:
        """The users' engagement rows, built once for both retrievers of a blend."""
        assert interactions is not None
        return UserHistory.from_interactions(interactions)

    def build(kind: str) -> Retriever:
        """The retriever ``kind`` (the system's own or its blended one) with ``system``'s fields."""
        if kind == TWO_TOWER_RETRIEVER:
            assert system.two_tower_version
            towers = models.get(TWO_TOWER, system.two_tower_version)
            searched = index
            if searched is None:
                ids = np.asarray(catalog_ids.to_pylist(), dtype=object)
                offsets = prior_offsets(items, system.popularity_prior, towers.config.temperature)
                vectors = np.asarray(item_vectors, np.float32)
                searched = build_scann_index(ids, vectors, index_config, offsets=offsets)
            elif searched.settings.score_offset != bool(system.popularity_prior):
                has = "has" if searched.settings.score_offset else "has no"
                raise ValueError(
                    f"the index {has} popularity prior, the served system's is {system.popularity_prior:g}: "
                    "the index was built for another system"
                )
            return EmbeddingRetriever(towers.embed_users, searched.search_positions)
        if interactions is None:
            raise ValueError(f"the {kind} retriever needs the interactions input")
        if kind == POPULAR_RETRIEVER:
            return PopularityRetriever.fit(interactions, catalog_ids, as_of, system.popularity_window_days)
        if kind == KNN_RETRIEVER:
            return ItemKnnRetriever.fit(history(), catalog_ids, system.knn_neighbors)
        if kind == ALS_RETRIEVER:
            assert system.als_version
            model = models.get(ALS, system.als_version)
            return AlsRetriever.build(history(), model, catalog_ids, index_config, als_index, build_als_tree)
        raise ValueError(f"unknown retriever {kind!r}")

    first = build(system.retriever)
    if system.blend_retriever is None:
        return first
    return BlendRetriever(first, build(system.blend_retriever), system.blend_weight)
