"""The serving context of a run date: the catalog, its item embeddings, the served system's retriever and
ranker, loaded once per shard from the lake (or built in memory for a replayed night), with the lookup
structures every user batch shares."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake
from pipelines.core.model_settings import ALS_RETRIEVER, TWO_TOWER_RETRIEVER
from pipelines.core.paths import RANKER, LakePaths
from pipelines.core.run_date import end_of_day
from pipelines.core.settings import Settings
from pipelines.core.tables import row_numbers
from pipelines.serving.embeddings import read_embeddings
from pipelines.serving.exploration import LanguagePool
from pipelines.serving.filters import ENGLISH
from pipelines.serving.inputs import read_input, read_shard_input
from pipelines.serving.retrievers import Retriever
from pipelines.serving.system import ServedSystem

EXPLORATION_MAX_AGE_DAYS = 3.0
FALLBACK_POOL = 2000


@dataclasses.dataclass
class ServingContext:
    """Everything a shard needs that is the same for all users of ``ds``.

    Item row ``j`` of ``items`` is datapoint ``j`` of the index and row ``j`` of ``item_vectors``. Lookup
    structures derived from these fields (item id to row, per-language exploration pools, ...) are built
    on first use and kept, so a shard pays for them once, not per user batch.
    """

    items: pa.Table
    item_ids: np.ndarray
    item_vectors: np.ndarray
    item_language: np.ndarray
    item_source: np.ndarray
    item_author: np.ndarray
    tag_indptr: np.ndarray
    tag_codes: np.ndarray
    languages: dict[str, int]
    sources: dict[str, int]
    tags: dict[str, int]
    popular: np.ndarray
    exploration: np.ndarray
    item_age_days: np.ndarray
    retriever: Retriever
    ranker: Any | None
    system: ServedSystem

    @functools.cached_property
    def item_id_array(self) -> pa.Array:
        """``item_ids`` as one Arrow string array."""
        return pa.array(self.item_ids.tolist(), pa.string())

    def item_rows(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The post row of each id, -1 for ids not in the catalog."""
        return row_numbers(ids, self.item_id_array, self._unique_item_ids)

    @functools.cached_property
    def _unique_item_ids(self) -> bool:
        return pc.count_distinct(self.item_id_array, mode="all").as_py() == len(self.item_id_array)

    @functools.cached_property
    def unit_item_vectors(self) -> np.ndarray:
        """``item_vectors`` normalised the way diversification does it, once for the catalog."""
        from pipelines.serving.diversify import unit_rows

        return unit_rows(self.item_vectors)

    @functools.cached_property
    def ranker_items(self) -> Any:
        """The ranker's post features of the catalog (a ``pipelines.training.ranker.ItemFeatures``), built
        once for every batch of the shard."""
        from pipelines.training.ranker import ItemFeatures

        return ItemFeatures.from_rows(self.items)

    @functools.cached_property
    def too_old(self) -> np.ndarray:
        """Posts older than the system's ``max_item_age_days``: never listed."""
        limit = self.system.max_item_age_days
        return self.item_age_days > limit if limit is not None else np.zeros(len(self.item_ids), bool)

    @functools.cached_property
    def listed_language(self) -> np.ndarray:
        """``item_language``, with -2 (no language code) for posts ``too_old`` to be listed: the filters
        read both facts of a post in one lookup."""
        return np.where(self.too_old, -2, self.item_language)

    @functools.cached_property
    def source_width(self) -> int:
        """One more than the largest source code (the stride of (user, source) keys)."""
        return max(len(self.sources), int(self.item_source.max(initial=-1)) + 1)

    @functools.cached_property
    def tag_width(self) -> int:
        """One more than the largest tag code (the stride of (user, tag) keys)."""
        return max(len(self.tags), int(self.tag_codes.max(initial=-1)) + 1)

    def exploration_for(self, language: int) -> LanguagePool:
        """The exploration posts open to users of ``language`` (their language or English)."""
        pools = self._language_pools
        if language not in pools:
            pools[language] = LanguagePool.build(self, language)
        return pools[language]

    @functools.cached_property
    def _language_pools(self) -> dict[int, LanguagePool]:
        return {}


def _codes(values: pa.Array | pa.ChunkedArray, vocabulary: dict[str, int]) -> np.ndarray:
    """The code of each value (null counts as ""), adding unseen values to ``vocabulary`` in order of
    first appearance with the next free codes."""
    values = pc.fill_null(values, "")
    encoded = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    first_seen = encoded.dictionary.to_pylist()
    codes = np.fromiter(
        (vocabulary.setdefault(v, len(vocabulary)) for v in first_seen), np.int64, len(first_seen)
    )
    return codes[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]


def build_context(
    items: pa.Table, item_vectors: np.ndarray, retriever: Retriever, ranker: Any | None, system: ServedSystem
) -> ServingContext:
    """The context of a catalog (``items`` rows; ``item_vectors`` row by row, for diversification)."""
    item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
    vectors = np.array(item_vectors, dtype=np.float32, copy=True).reshape(len(item_ids), -1)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    languages: dict[str, int] = {ENGLISH: 0}
    sources: dict[str, int] = {}
    tags: dict[str, int] = {}
    authors: dict[str, int] = {}
    tag_lists = items.column("tags")
    tag_codes = _codes(pc.list_flatten(tag_lists), tags)
    lengths = pc.fill_null(pc.list_value_length(tag_lists), 0).to_numpy()
    engagements = items.column("engagements_short").to_numpy().astype(np.float64)
    popular = np.argsort(-engagements, kind="stable")[:FALLBACK_POOL]
    age = items.column("item_age_days").to_numpy()
    impressions = items.column("impressions_short").to_numpy()
    fresh = np.flatnonzero(age <= EXPLORATION_MAX_AGE_DAYS)
    exploration = fresh[impressions[fresh] <= np.quantile(impressions[fresh], 0.25)] if len(fresh) else fresh
    return ServingContext(
        items=items,
        item_ids=item_ids,
        item_vectors=vectors,
        item_language=_codes(items.column("language"), languages),
        item_source=_codes(items.column("source"), sources),
        item_author=_codes(items.column("author"), authors),
        tag_indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        tag_codes=tag_codes,
        languages=languages,
        sources=sources,
        tags=tags,
        popular=popular,
        exploration=exploration,
        item_age_days=np.asarray(age, dtype=np.float64),
        retriever=retriever,
        ranker=ranker,
        system=system,
    )


def no_vectors(n_items: int) -> np.ndarray:
    """The item vectors of a system without a two-tower: one zero column (an undiversified baseline
    reads no embeddings)."""
    return np.zeros((n_items, 1), np.float32)


def _interactions(
    lake: Lake, ds: dt.date, system: ServedSystem, shard: int, num_shards: int
) -> pa.Table | None:
    """The engagements ``system``'s retrievers read: the whole log for the ones fitted on it (popularity,
    item-kNN), the shard's users' histories for ALS alone (its post factors are trained), none for the
    two-tower alone."""
    fitted = set(system.retrievers) - {TWO_TOWER_RETRIEVER}
    if not fitted:
        return None
    if fitted == {ALS_RETRIEVER}:
        return read_shard_input(lake, ds, "interactions", shard, num_shards)
    return read_input(lake, ds, "interactions")


def load_context(
    lake: Lake, ds: dt.date, settings: Settings, system: ServedSystem, shard: int, num_shards: int
) -> ServingContext:
    """Load the catalog, embeddings and ``system``'s retriever and ranker for the night of ``ds``, for the
    users of ``shard`` of ``num_shards``."""
    from pipelines.serving.index_store import load_als_index, load_index
    from pipelines.serving.model_store import ModelStore
    from pipelines.serving.retrieval import make_retriever

    items = read_input(lake, ds, "items")
    item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
    if system.two_tower_version is None:
        vectors = no_vectors(len(item_ids))
    else:
        embeddings, version = read_embeddings(lake, ds)
        if not np.array_equal(np.asarray(embeddings.column("item_id").to_pylist(), object), item_ids):
            raise RuntimeError(
                f"ds={ds}: the embeddings do not cover the same posts in the same order as inputs"
            )
        if version != system.two_tower_version:
            raise RuntimeError(
                f"ds={ds}: embeddings of two-tower {version}, the served system needs "
                f"{system.two_tower_version}"
            )
        flat = embeddings.column("embedding").combine_chunks().flatten().to_numpy().astype(np.float32)
        vectors = flat.reshape(len(item_ids), -1)
    index = None
    if system.retriever == TWO_TOWER_RETRIEVER:
        index = load_index(lake, LakePaths.index(ds))
        if not np.array_equal(np.asarray(index.item_ids, object), item_ids):
            raise RuntimeError(
                f"ds={ds}: the index does not cover the same posts in the same order as inputs"
            )
    # The tree over the ALS post factors is built once by the index stage; without one, exact search.
    als_index = None
    if ALS_RETRIEVER in system.retrievers:
        assert system.als_version
        als_index = load_als_index(lake, ds, system.als_version)
    models = ModelStore(lake, compiled_ranker=settings.ranker.compiled_scoring)
    retriever = make_retriever(
        system,
        models,
        items,
        vectors,
        _interactions(lake, ds, system, shard, num_shards),
        end_of_day(ds),
        settings.index,
        index=index,
        als_index=als_index,
        build_als_tree=False,
    )
    ranker = models.get(RANKER, system.ranker_version) if system.ranker_version else None
    return build_context(items, vectors, retriever, ranker, system)
