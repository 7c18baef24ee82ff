"""Nightly candidates: per-user ranked lists of posts, computed shard by shard and published atomically.

Stages (each one DAG task):

1. :func:`export_inputs` snapshots what serving needs from the warehouse into ``inputs/ds=…/`` (users
   with features, the eligible catalog, already-seen pairs, profiles), so shard workers read only the lake.
2. :func:`embed_items` batch-predicts the champion item tower over the eligible catalog into
   ``embeddings/items/ds=…/`` with the model version recorded.
3. :func:`build_index` builds the ScaNN index (recall-checked against brute force on real user queries).
4. :func:`plan_shards` opens a staging folder for ``candidates/ds=…/`` and lists the shards; users go to
   shard ``crc32(user_id) % num_shards``, a hash that is stable across runs, machines and Python versions.
5. :func:`candidates_for_shard` (one mapped task per shard): user tower → ScaNN top-N → filter (seen,
   blocked tags and sources, language, too old) → LightGBM rank → diversify → top-K, with a fallback for
   users whose list would come out short; writes ``shard=NNN.parquet`` into the staging folder.
6. :func:`publish_candidates` checks every shard is there and writes the manifest last.

Every list written obeys the invariants in :func:`check_lists` (checked before a shard file is written).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, TWO_TOWER, LakePaths
from pipelines.core.schema import CANDIDATES
from pipelines.core.settings import Settings
from pipelines.core.tables import row_numbers
from pipelines.serving.inputs import read_input
from pipelines.serving.shards import shard_of
from pipelines.training import registry

log = logging.getLogger(__name__)

ENGLISH = "en"
EMBEDDINGS_FILE = "embeddings.parquet"
EXPLORATION_MAX_AGE_DAYS = 3.0
FALLBACK_POOL = 2000


class NoChampionError(PermanentError):
    """No blessed two-tower model exists yet: train one before the nightly job."""


class ListInvariantError(RuntimeError):
    """A candidate list broke an invariant; the message names the user and the rule."""


# -- 2. item embeddings ---------------------------------------------------------------------------------


def embed_items(lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Embed the eligible catalog of ``ds`` with the champion item tower and publish the embeddings.

    Raises:
        NoChampionError: no two-tower champion has been promoted yet.
    """
    from pipelines.training.two_tower import load_towers

    version = registry.champion_version(lake, TWO_TOWER)
    if version is None:
        raise NoChampionError("no two-tower champion: run the training DAG (or `python -m pipelines train`)")
    items = read_input(lake, ds, "items")
    started = time.perf_counter()
    towers = load_towers(lake, version)
    vectors = towers.embed_items(items).astype(np.float32)
    seconds = time.perf_counter() - started
    table = pa.table(
        {
            "item_id": items.column("item_id"),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        }
    )
    dataset = LakePaths.embeddings(ds)
    staging = lake.begin_publish(dataset)
    lake.write_parquet(f"{staging}/{EMBEDDINGS_FILE}", table)
    lake.publish(
        dataset,
        staging,
        [EMBEDDINGS_FILE],
        metadata={"model_version": version, "n_items": len(vectors), "dim": int(vectors.shape[1])},
    )
    log.info("embedded %d posts with two-tower %s in %.1fs", len(vectors), version, seconds)
    return {
        "model_version": version,
        "n_items": len(vectors),
        "items_per_s": round(len(vectors) / seconds, 1),
    }


def read_embeddings(lake: Lake, ds: dt.date) -> tuple[pa.Table, str]:
    """The published item embeddings of ``ds`` and the two-tower version that made them."""
    dataset = LakePaths.embeddings(ds)
    manifest = lake.read_manifest(dataset)
    return lake.read_parquet(lake.manifest_files(dataset)[0]), manifest["metadata"]["model_version"]


# -- 3. index -------------------------------------------------------------------------------------------
def build_index(lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Build, recall-check and publish the ScaNN index of ``ds``'s item embeddings.

    The recall is measured on real user queries: the user tower over a sample of ``ds``'s users.

    Raises:
        pipelines.serving.recall.IndexRecallError: recall below the configured floor (nothing is published).
    """
    from pipelines.serving.index_store import build_and_publish_index
    from pipelines.training.two_tower import load_towers

    embeddings, version = read_embeddings(lake, ds)
    users = read_input(lake, ds, "users")
    rng = np.random.default_rng(settings.index.seed)
    sample = np.sort(rng.permutation(users.num_rows)[: settings.index.recall_sample_queries])
    towers = load_towers(lake, version)
    queries = towers.embed_users(users.take(pa.array(sample)))
    report = build_and_publish_index(lake, ds, embeddings, queries, settings.index)
    return {
        "uri": report.uri,
        "n_items": report.n_items,
        "recall": report.recall,
        "recall_k": report.recall_k,
        "build_seconds": round(report.build_seconds, 2),
        "model_version": version,
    }


# -- 4. shards ------------------------------------------------------------------------------------------


def dry_run_sample(users: pa.Table, n: int) -> pa.Table:
    """A seeded sample of ``n`` users, the same in every shard task of a dry run."""
    picked = np.sort(np.random.default_rng(0).permutation(users.num_rows)[:n])
    return users.take(pa.array(picked))


def plan_shards(lake: Lake, ds: dt.date, settings: Settings) -> list[dict[str, Any]]:
    """Open a fresh staging folder for ``ds``'s candidates and list one work item per shard."""
    staging = lake.begin_publish(LakePaths.candidates(ds))
    n = settings.candidates.num_shards
    return [{"shard": i, "num_shards": n, "staging": staging} for i in range(n)]


# -- 5. per-shard serving -------------------------------------------------------------------------------
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
    index: Any
    towers: Any
    ranker: Any | None
    two_tower_version: str
    ranker_version: str | None

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
    def ranker_items(self) -> pa.Table:
        """The post columns the ranker reads."""
        from pipelines.training.ranker import ITEM_COLUMNS

        return self.items.select(list(ITEM_COLUMNS))

    @functools.cached_property
    def source_width(self) -> int:
        """One more than the largest source code (the stride of (user, source) keys)."""
        return max(len(self.sources), int(self.item_source.max(initial=-1)) + 1)

    @functools.cached_property
    def tag_width(self) -> int:
        """One more than the largest tag code (the stride of (user, tag) keys)."""
        return max(len(self.tags), int(self.tag_codes.max(initial=-1)) + 1)

    def exploration_for(self, language: int) -> _LanguagePool:
        """The exploration posts open to users of ``language`` (their language or English)."""
        pools = self._language_pools
        if language not in pools:
            pools[language] = _LanguagePool.build(self, language)
        return pools[language]

    @functools.cached_property
    def _language_pools(self) -> dict[int, _LanguagePool]:
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


def _vocabulary_codes(values: pa.Array | pa.ChunkedArray, vocabulary: dict[str, int]) -> np.ndarray:
    """The code of each value in ``vocabulary``, -1 for values (and nulls) not in it."""
    if not vocabulary:
        return np.full(len(values), -1, np.int64)
    found = pc.index_in(values, value_set=pa.array(list(vocabulary), pa.string()))
    codes = np.fromiter(vocabulary.values(), np.int64, len(vocabulary))
    return np.where(found.is_null(), -1, codes[found.fill_null(0).to_numpy()]).astype(np.int64)


def _serving_ranker(ranker: Any, settings: Settings) -> Any:
    return ranker.compile() if settings.ranker.compiled_scoring else ranker


def load_context(lake: Lake, ds: dt.date, settings: Settings) -> ServingContext:
    """Load the catalog, embeddings, index and models of ``ds`` for serving."""
    from pipelines.serving.index_store import load_index
    from pipelines.training.ranker import load_ranker
    from pipelines.training.two_tower import load_towers

    items = read_input(lake, ds, "items")
    embeddings, version = read_embeddings(lake, ds)
    index = load_index(lake, LakePaths.index(ds))
    item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
    for name, ids in (("embeddings", embeddings.column("item_id")), ("index", index.item_ids)):
        if not np.array_equal(
            np.asarray(ids if isinstance(ids, np.ndarray) else ids.to_pylist(), object), item_ids
        ):
            raise RuntimeError(f"ds={ds}: the {name} do not cover the same posts in the same order as inputs")
    flat = embeddings.column("embedding").combine_chunks().flatten().to_numpy().astype(np.float32)
    vectors = flat.reshape(len(item_ids), -1)
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

    ranker_version = registry.champion_version(lake, RANKER)
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
        index=index,
        towers=load_towers(lake, version),
        ranker=_serving_ranker(load_ranker(lake, ranker_version), settings) if ranker_version else None,
        two_tower_version=version,
        ranker_version=ranker_version,
    )


@dataclasses.dataclass(frozen=True)
class CodeLists:
    """One list of integer codes per user, stored flat: user ``u`` owns ``codes[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    codes: np.ndarray

    @classmethod
    def encode(cls, column: pa.ChunkedArray, vocabulary: dict[str, int]) -> CodeLists:
        """The codes of each list of ``column``; values (and nulls) not in ``vocabulary`` are left out."""
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
        codes = _vocabulary_codes(pc.list_flatten(column), vocabulary)
        owner = np.repeat(np.arange(len(lengths)), lengths)
        kept = codes >= 0
        counts = np.bincount(owner[kept], minlength=len(lengths))
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), codes[kept])

    def __getitem__(self, user: int) -> np.ndarray:
        return self.codes[self.indptr[user] : self.indptr[user + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def rows(self, start: int, stop: int) -> CodeLists:
        return CodeLists(
            self.indptr[start : stop + 1] - self.indptr[start],
            self.codes[self.indptr[start] : self.indptr[stop]],
        )

    def keys(self, width: int) -> np.ndarray:
        """Sorted unique ``user * width + code`` of every listed code."""
        return _sorted_unique(np.repeat(np.arange(len(self.indptr) - 1), self.lengths) * width + self.codes)


@dataclasses.dataclass
class UserBatch:
    """Codes of one batch of users, aligned with the rows of ``users``."""

    users: pa.Table
    language: np.ndarray
    blocked_sources: CodeLists
    blocked_tags: CodeLists
    selected_tags: CodeLists
    seen_keys: np.ndarray  # user_row * n_items + item_row, sorted, unique
    n_items: int
    seen_users: pa.ChunkedArray  # the seen pairs, kept to re-key a slice when user ids repeat
    seen_items: np.ndarray  # post row of each seen pair, -1 when not in the catalog

    @classmethod
    def build(cls, users: pa.Table, seen: pa.Table, ctx: ServingContext) -> UserBatch:
        return cls.from_seen(users, seen.column("user_id"), ctx.item_rows(seen.column("item_id")), ctx)

    @classmethod
    def from_seen(
        cls, users: pa.Table, seen_users: pa.ChunkedArray, seen_items: np.ndarray, ctx: ServingContext
    ) -> UserBatch:
        n_items = len(ctx.item_ids)
        user_rows = row_numbers(seen_users, users.column("user_id"))
        known = (user_rows >= 0) & (seen_items >= 0)
        return cls(
            users=users,
            language=_vocabulary_codes(pc.fill_null(users.column("language"), ""), ctx.languages),
            blocked_sources=CodeLists.encode(users.column("blocked_sources"), ctx.sources),
            blocked_tags=CodeLists.encode(users.column("blocked_tags"), ctx.tags),
            selected_tags=CodeLists.encode(users.column("selected_tags"), ctx.tags),
            seen_keys=_sorted_unique(user_rows[known] * n_items + seen_items[known]),
            n_items=n_items,
            seen_users=seen_users,
            seen_items=seen_items,
        )

    @functools.cached_property
    def unique_users(self) -> bool:
        ids = self.users.column("user_id")
        return pc.count_distinct(ids, mode="all").as_py() == len(ids)

    def rows(self, start: int, stop: int, ctx: ServingContext) -> UserBatch:
        """The batch of users ``start:stop``, as :meth:`build` would make it from those users alone."""
        users = self.users.slice(start, stop - start)
        if not self.unique_users:
            # A repeated id owns its seen posts at its last row within the slice: key them again.
            return UserBatch.from_seen(users, self.seen_users, self.seen_items, ctx)
        lo, hi = np.searchsorted(self.seen_keys, [start * self.n_items, stop * self.n_items])
        return UserBatch(
            users=users,
            language=self.language[start:stop],
            blocked_sources=self.blocked_sources.rows(start, stop),
            blocked_tags=self.blocked_tags.rows(start, stop),
            selected_tags=self.selected_tags.rows(start, stop),
            seen_keys=self.seen_keys[lo:hi] - start * self.n_items,
            n_items=self.n_items,
            seen_users=self.seen_users,
            seen_items=self.seen_items,
        )

    def has_seen(self, keys: np.ndarray) -> np.ndarray:
        """Which ``user_row * n_items + item_row`` keys are seen pairs."""
        return self._seen_index.get_indexer(keys.ravel()).reshape(keys.shape) >= 0

    @functools.cached_property
    def _seen_index(self) -> pd.Index:
        # A hash lookup: several times faster than a binary search over the sorted keys.
        return pd.Index(self.seen_keys)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of an integer array; a plain sort is many times faster than its hashing."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in the sorted unique array ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(np.shape(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def allowed(ctx: ServingContext, batch: UserBatch, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which (user, post) pairs may be shown: ``rows[i]`` is a user row, ``positions[i, j]`` a post row.

    A post is out when it was already seen, is in a blocked source or has a blocked tag, or is in a
    language other than the user's and English. Negative positions (index padding) are out too.
    """
    ok = positions >= 0
    p = np.maximum(positions, 0)
    language = ctx.item_language[p]
    ok &= (language == batch.language[rows][:, None]) | (language == ctx.languages[ENGLISH])
    ok &= ~batch.has_seen(rows[:, None] * len(ctx.item_ids) + p)
    # Blocks are rare: only the rows of users with some are looked at, with one sorted-key lookup of
    # every (user, source) and (user, post tag) pair against the users' blocked codes.
    blocking = np.flatnonzero(batch.blocked_sources.lengths[rows] > 0)
    if len(blocking):
        width = ctx.source_width
        keys = rows[blocking][:, None] * width + ctx.item_source[p[blocking]]
        ok[blocking] &= ~_contains(batch.blocked_sources.keys(width), keys)
    blocking = np.flatnonzero(batch.blocked_tags.lengths[rows] > 0)
    if len(blocking):
        width = ctx.tag_width
        items = p[blocking].ravel()
        starts, lengths = ctx.tag_indptr[items], ctx.tag_indptr[items + 1] - ctx.tag_indptr[items]
        pair = np.repeat(np.arange(len(items)), lengths)
        owner = np.repeat(rows[blocking], p.shape[1])[pair]
        hit = _contains(
            batch.blocked_tags.keys(width), owner * width + ctx.tag_codes[_ranges(starts, lengths)]
        )
        tagged = np.bincount(pair[hit], minlength=len(items)) > 0
        ok[blocking] &= ~tagged.reshape(len(blocking), p.shape[1])
    return ok


def _has_any_tag(ctx: ServingContext, items: np.ndarray, tags: np.ndarray) -> np.ndarray:
    starts, ends = ctx.tag_indptr[items], ctx.tag_indptr[items + 1]
    lengths = ends - starts
    flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(
        lengths.sum()
    )
    hit = np.isin(ctx.tag_codes[flat], tags).astype(np.int64)
    return np.bincount(np.repeat(np.arange(len(items)), lengths), weights=hit, minlength=len(items)) > 0


@dataclasses.dataclass(frozen=True)
class _LanguagePool:
    """The exploration posts open to one user language (its own and English), each post once, in the
    order of its first listing in ``ServingContext.exploration``, with lookups into their positions:
    from catalog row (``sorted_posts`` / ``sorted_position``) and from source and tag code
    (``by_source[source_starts[c]:source_starts[c + 1]]`` are the positions of source ``c``'s posts)."""

    posts: np.ndarray
    sorted_posts: np.ndarray
    sorted_position: np.ndarray
    by_source: np.ndarray
    source_starts: np.ndarray
    by_tag: np.ndarray
    tag_starts: np.ndarray

    @classmethod
    def build(cls, ctx: ServingContext, language: int) -> _LanguagePool:
        _, first = np.unique(ctx.exploration, return_index=True)
        listed = ctx.exploration[np.sort(first)]
        codes = ctx.item_language[listed]
        posts = listed[(codes == language) | (codes == ctx.languages[ENGLISH])]
        order = np.argsort(posts)
        sources = ctx.item_source[posts]
        by_source = np.argsort(sources, kind="stable")
        lengths = ctx.tag_indptr[posts + 1] - ctx.tag_indptr[posts]
        position = np.repeat(np.arange(len(posts)), lengths)
        tags = ctx.tag_codes[_ranges(ctx.tag_indptr[posts], lengths)]
        by_tag = np.argsort(tags, kind="stable")
        return cls(
            posts=posts,
            sorted_posts=posts[order],
            sorted_position=order,
            by_source=by_source,
            source_starts=np.searchsorted(sources[by_source], np.arange(ctx.source_width + 1)),
            by_tag=position[by_tag],
            tag_starts=np.searchsorted(tags[by_tag], np.arange(ctx.tag_width + 1)),
        )

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(which, position)``: the indices in ``rows`` of pool posts and their positions in ``posts``."""
        if len(self.posts) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self.sorted_posts, rows), len(self.posts) - 1)
        which = np.flatnonzero(self.sorted_posts[at] == rows)
        return which, self.sorted_position[at[which]]


class _ExplorationPools:
    """Each user's exploration pool: the exploration posts :func:`allowed` lets through.

    A pool is its language's exploration posts minus the few the user has seen or blocked, so pools are
    counted and indexed through those few positions, for the whole batch at once, never listed.
    """

    def __init__(self, ctx: ServingContext, batch: UserBatch) -> None:
        self.ctx, self.batch = ctx, batch

    def pick(
        self, exclude_indptr: np.ndarray, exclude: np.ndarray, draw: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        ctx, batch = self.ctx, self.batch
        n_users = batch.users.num_rows
        seen_owner, seen_post = np.divmod(batch.seen_keys, len(ctx.item_ids))
        listed = (
            (seen_owner, seen_post),
            (np.repeat(np.arange(n_users), np.diff(exclude_indptr)), exclude),
        )
        coded = (
            (batch.blocked_sources, "by_source", "source_starts"),
            (batch.blocked_tags, "by_tag", "tag_starts"),
        )
        pools = {int(language): ctx.exploration_for(int(language)) for language in np.unique(batch.language)}
        sizes = np.zeros(n_users, np.int64)
        owners, positions = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for language, pool in pools.items():
            members = batch.language == language
            sizes[members] = len(pool.posts)
            for owner, rows in listed:
                chosen = np.flatnonzero(members[owner])
                which, position = pool.positions(rows[chosen])
                owners.append(owner[chosen[which]])
                positions.append(position)
            for lists, index, starts in coded:
                owner = np.repeat(np.arange(n_users), lists.lengths)
                chosen = np.flatnonzero(members[owner])
                codes = lists.codes[chosen]
                lo, hi = getattr(pool, starts)[codes], getattr(pool, starts)[codes + 1]
                owners.append(np.repeat(owner[chosen], hi - lo))
                positions.append(getattr(pool, index)[_ranges(lo, hi - lo)])
        # Every (user, position) out of a user's pool, as sorted unique keys.
        stride = int(sizes.max(initial=0)) + 1
        gone = _sorted_unique(np.concatenate(owners) * stride + np.concatenate(positions))
        gone_owner, gone_position = np.divmod(gone, stride)
        counts = sizes - np.bincount(gone_owner, minlength=n_users)
        nth = draw(counts)
        picking = np.flatnonzero(counts > 0)
        # The nth open position of a user skips every gone position at or before it: with gone positions
        # g_0 < g_1 < ... of the user, that is nth + #{i : g_i - i <= nth}.
        gone_start = np.searchsorted(gone_owner, np.arange(n_users + 1))
        skipped = gone_owner * stride + gone_position - (np.arange(len(gone)) - gone_start[gone_owner])
        position = nth + np.searchsorted(skipped, picking * stride + nth, side="right") - gone_start[picking]
        picks = np.full(n_users, -1, np.int64)
        for language, pool in pools.items():
            mine = batch.language[picking] == language
            picks[picking[mine]] = pool.posts[position[mine]]
        return picks


@dataclasses.dataclass
class StageTimer:
    """Wall seconds per stage, summed over batches.

    ``seconds`` add up to the wall time of what was timed. Work that runs ahead in the background (the
    next batch's user tower and retrieval) counts there only for the time the pipeline waited for it;
    its full busy time is in ``overlapped``.
    """

    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    overlapped: dict[str, float] = dataclasses.field(default_factory=dict)

    def __call__(self, name: str) -> _Timing:
        return _Timing(self.seconds, name)

    def background(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed into ``overlapped[name]``."""

        def timed(*args: Any) -> Any:
            with _Timing(self.overlapped, name):
                return fn(*args)

        return timed


class _Timing:
    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self.seconds, self.name = seconds, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + elapsed


def _lists_for(ctx: ServingContext, batch: UserBatch, settings: Settings, timer: StageTimer) -> pa.Table:
    """The lists of ``batch``'s users, ``user_batch_size`` users at a time.

    The next batch's user tower and retrieval run in a background thread while a batch is filtered,
    ranked and diversified: both are multi-threaded native code that releases the GIL, so they use the
    cores the single-threaded numpy steps leave idle. Batches are independent, so the lists are those of
    one batch after the other.
    """
    spans = list(_batches(batch.users.num_rows, settings.candidates.user_batch_size))
    top_n = min(settings.candidates.top_n, len(ctx.item_ids))
    embed = timer.background("embed_users", ctx.towers.embed_users)
    search = timer.background("retrieve", ctx.index.search_positions)
    parts = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval") as worker:

        def retrieve(start: int, size: int) -> tuple[Future, Future]:
            queries = worker.submit(embed, batch.users.slice(start, size))
            return queries, worker.submit(lambda: search(queries.result(), top_n))

        pending = retrieve(*spans[0]) if spans else None
        for i, (start, size) in enumerate(spans):
            queries, found = pending
            with timer("embed_users"):
                queries.result()
            with timer("retrieve"):
                positions, scores = found.result()
            pending = retrieve(*spans[i + 1]) if i + 1 < len(spans) else None
            part = batch.rows(start, start + size, ctx)
            parts.append(_batch_lists(ctx, part, positions, scores, settings, timer))
    return pa.concat_tables(parts) if parts else CANDIDATES.empty_table()


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(size, n - start)


def _batch_lists(
    ctx: ServingContext,
    batch: UserBatch,
    positions: np.ndarray,
    retrieval_scores: np.ndarray,
    settings: Settings,
    timer: StageTimer,
) -> pa.Table:
    """Filter, rank and diversify one batch's retrieved posts (``positions``, ``retrieval_scores``)."""
    from pipelines.serving.diversify import CandidateLists, diversify_lists
    from pipelines.training.ranker import RankingPairs

    k = settings.candidates.top_k
    n_users = batch.users.num_rows
    rows = np.arange(n_users)
    with timer("filter"):
        ok = allowed(ctx, batch, rows, positions)
        pair_user, pair_slot = np.nonzero(ok)
        pair_item = positions[pair_user, pair_slot]
    with timer("rank"):
        if ctx.ranker is not None and len(pair_user):
            # Features are per pair, so the ranker only needs the posts of this batch's pairs.
            listed = np.zeros(len(ctx.item_ids), bool)
            listed[pair_item] = True
            pairs = RankingPairs(
                users=batch.users,
                items=ctx.ranker_items.take(pa.array(np.flatnonzero(listed))),
                user_row=pair_user,
                item_row=(np.cumsum(listed) - 1)[pair_item],
                retrieval_score=retrieval_scores[pair_user, pair_slot].astype(np.float64),
                retrieval_rank=(pair_slot + 1).astype(np.float64),
            )
            pair_score = ctx.ranker.score_pairs(pairs)
        else:
            pair_score = retrieval_scores[pair_user, pair_slot].astype(np.float64)
        # Each user's pairs best first, ties in retrieval order: a stable sort within each user's row.
        score_grid = np.zeros(positions.shape)
        score_grid[pair_user, pair_slot] = pair_score
        by_score = np.lexsort((-score_grid, ~ok), axis=1)
    with timer("diversify"):
        # Each user's best-scored candidates go to MMR; the lists are diversified together.
        depth = np.minimum(ok.sum(axis=1), max(settings.diversify.mmr_depth, k) * 2)
        pool_user = np.repeat(rows, depth)
        pool_slot = by_score[pool_user, _ranges(np.zeros(n_users, np.int64), depth)]
        lists = CandidateLists(
            np.concatenate([[0], np.cumsum(depth)]),
            positions[pool_user, pool_slot],
            score_grid[pool_user, pool_slot],
        )
        rng = np.random.default_rng(
            [settings.diversify.seed, zlib.crc32(batch.users.column("user_id")[0].as_py().encode())]
        )
        chosen = diversify_lists(
            lists,
            ctx.unit_item_vectors,
            ctx.item_source,
            ctx.item_author,
            settings.diversify,
            _ExplorationPools(ctx, batch) if len(ctx.exploration) else None,
            rng,
            k,
            unit_vectors=True,
        )
        retrieval = retrieval_scores[pool_user, pool_slot].astype(np.float64)
        shown = _shown_lists(ctx, batch, lists, retrieval, chosen, k)
    with timer("assemble"):
        reason_ranked = "ranked" if ctx.ranker is not None else "retrieved"
        return pa.table(
            {
                "user_id": batch.users.column("user_id").take(pa.array(shown.user)),
                "rank": pa.array(shown.rank, pa.int32()),
                "item_id": ctx.item_id_array.take(pa.array(shown.item)),
                "score": pa.array(shown.score, pa.float32()),
                "retrieval_score": pa.array(shown.retrieval, pa.float32(), from_pandas=True),
                "reason": pa.array([reason_ranked, "explore", "fallback"], pa.string()).take(
                    pa.array(shown.reason)
                ),
            },
            schema=CANDIDATES,
        )


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + n) for s, n in zip(starts, lengths))``."""
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())


@dataclasses.dataclass
class _ShownLists:
    """The final lists of a batch, row by row: user row, 1-based rank, post row, scores, reason code
    (0 ranked or retrieved, 1 explore, 2 fallback)."""

    user: np.ndarray
    rank: np.ndarray
    item: np.ndarray
    score: np.ndarray
    retrieval: np.ndarray
    reason: np.ndarray


def _shown_lists(
    ctx: ServingContext,
    batch: UserBatch,
    lists: Any,
    retrieval: np.ndarray,
    chosen: Any,
    k: int,
) -> _ShownLists:
    """Post rows and scores of the diversified lists, topped up by :func:`_fallback` when short.

    The exploration post has no ranker or retrieval score: it is shown at the score of the slot above
    it (the best score of the list when it comes first). Fallback posts follow, each 1 below the one
    before, starting 1 below the list's lowest score; scores never increase down a list.
    """
    n_users = len(chosen.indptr) - 1
    length = np.diff(chosen.indptr)
    owner = np.repeat(np.arange(n_users), length)
    within = np.arange(len(owner)) - chosen.indptr[owner]
    from_list = chosen.position >= 0
    entry = np.minimum(lists.indptr[owner] + np.maximum(chosen.position, 0), len(lists.item_idx))
    item = np.where(from_list, np.append(lists.item_idx, -1)[entry], chosen.explore[owner])
    score = np.where(from_list, np.append(lists.scores, np.nan)[entry], np.nan)
    retrieval = np.where(from_list, np.append(retrieval, np.nan)[entry], np.nan)
    reason = np.where(from_list, 0, 1)
    for j in np.flatnonzero(~from_list):
        if within[j] > 0:
            score[j] = score[j - 1]
        else:
            rest = score[j + 1 : chosen.indptr[owner[j] + 1]]
            score[j] = rest.max() if len(rest) else 0.0
    short = np.flatnonzero(length < k)
    if len(short):
        extras = [
            _fallback(ctx, batch, int(u), item[chosen.indptr[u] : chosen.indptr[u + 1]], k - length[u])
            for u in short
        ]
        added = np.zeros(n_users, np.int64)
        added[short] = [len(x) for x in extras]
        floor = np.zeros(n_users)
        for u in short[length[short] > 0]:
            floor[u] = score[chosen.indptr[u] : chosen.indptr[u + 1]].min()
        extra_owner = np.repeat(np.arange(n_users), added)
        extra_within = length[extra_owner] + _ranges(np.zeros(n_users, np.int64), added)
        owner = np.concatenate([owner, extra_owner])
        within = np.concatenate([within, extra_within])
        item = np.concatenate([item, *extras]).astype(np.int64)
        score = np.concatenate([score, floor[extra_owner] - 1.0 - (extra_within - length[extra_owner])])
        retrieval = np.concatenate([retrieval, np.full(len(extra_owner), np.nan)])
        reason = np.concatenate([reason, np.full(len(extra_owner), 2)])
        order = np.lexsort((within, owner))
        owner, within, item = owner[order], within[order], item[order]
        score, retrieval, reason = score[order], retrieval[order], reason[order]
    if len(owner):
        # Scores never increase down a list: a running minimum, list by list.
        grid = np.full((n_users, int(within.max()) + 1), np.inf)
        grid[owner, within] = score
        score = np.minimum.accumulate(grid, axis=1)[owner, within]
    return _ShownLists(owner, within + 1, item, score, retrieval, reason)


def _fallback(ctx: ServingContext, batch: UserBatch, u: int, taken: np.ndarray, needed: int) -> np.ndarray:
    """Popular allowed posts for a user whose list came out short: posts with the user's selected tags
    first, then the rest, each by recent engagement."""
    pool = ctx.popular[~np.isin(ctx.popular, taken)]
    ok = allowed(ctx, batch, np.array([u]), pool[None, :])[0]
    pool = pool[ok]
    if len(batch.selected_tags[u]):
        matches = _has_any_tag(ctx, pool, batch.selected_tags[u])
        pool = np.concatenate([pool[matches], pool[~matches]])
    return pool[:needed]


def check_lists(candidates: pa.Table, ctx: ServingContext, batch: UserBatch, k: int) -> None:
    """Raise :class:`ListInvariantError` unless every list has at most ``k`` posts, no duplicates, only
    catalog posts, nothing seen or blocked, and scores that never increase down the list.

    A list is a run of rows of one user; the first list (in row order) that breaks a rule is reported,
    with the first rule it breaks in the order above.
    """
    item_rows = ctx.item_rows(candidates.column("item_id"))
    unknown = np.flatnonzero(item_rows < 0)
    if len(unknown):
        names = candidates.column("item_id").take(pa.array(unknown[:3])).to_pylist()
        raise ListInvariantError(f"posts not in the catalog: {names}")
    rows = row_numbers(candidates.column("user_id"), batch.users.column("user_id"))
    if (rows < 0).any():
        raise KeyError(candidates.column("user_id")[int(np.flatnonzero(rows < 0)[0])].as_py())
    if len(rows) == 0:
        return
    scores = candidates.column("score").to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(np.diff(rows)) + 1])
    sizes = np.diff(np.append(starts, len(rows)))
    group = np.repeat(np.arange(len(starts)), sizes)
    too_long = sizes > k
    twice = np.zeros(len(starts), bool)
    keys = np.sort(group * len(ctx.item_ids) + item_rows)
    twice[keys[1:][keys[1:] == keys[:-1]] // len(ctx.item_ids)] = True
    rising = np.zeros(len(starts), bool)
    rising[group[1:][(np.diff(scores) > 0) & (group[1:] == group[:-1])]] = True
    ok = allowed(ctx, batch, rows, item_rows[:, None])[:, 0]
    hidden = np.zeros(len(starts), bool)
    hidden[group[~ok]] = True
    broken = np.flatnonzero(too_long | twice | rising | hidden)
    if not len(broken):
        return
    g = int(broken[0])
    user = candidates.column("user_id")[int(starts[g])].as_py()
    if too_long[g]:
        raise ListInvariantError(f"user {user}: {sizes[g]} posts, more than top_k={k}")
    if twice[g]:
        raise ListInvariantError(f"user {user}: a post appears twice")
    if rising[g]:
        raise ListInvariantError(f"user {user}: scores increase down the list")
    first = starts[g] + int(np.flatnonzero(~ok[starts[g] : starts[g] + sizes[g]])[0])
    bad = ctx.item_ids[item_rows[first]]
    raise ListInvariantError(f"user {user}: post {bad} is seen, blocked or in another language")


def candidates_for_shard(
    lake: Lake, ds: dt.date, shard: int, num_shards: int, staging: str, settings: Settings
) -> dict[str, Any]:
    """Compute and write the candidate lists of one shard of ``ds``'s users into ``staging``.

    Returns:
        The file written, rows, users, users/s overall, seconds per stage (they add up to the wall time)
        and, as ``overlapped_seconds``, the busy time of the user tower and retrieval that ran ahead in
        the background.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    started = time.perf_counter()
    timer = StageTimer()
    with timer("load"):
        ctx = load_context(lake, ds, settings)
        users = read_input(lake, ds, "users")
        if settings.dry_run_users:
            users = dry_run_sample(users, settings.dry_run_users)
        users = users.filter(pa.array(shard_of(users.column("user_id").to_pylist(), num_shards) == shard))
        seen = read_input(lake, ds, "seen")
        seen = seen.filter(pc.is_in(seen.column("user_id"), value_set=users.column("user_id")))
    with timer("prepare"):
        batch = UserBatch.build(users, seen, ctx)
    candidates = _lists_for(ctx, batch, settings, timer)
    with timer("check"):
        check_lists(candidates, ctx, batch, settings.candidates.top_k)

    name = LakePaths.shard_file(shard)
    with timer("write"):
        lake.write_parquet(f"{staging}/{name}", candidates)
    elapsed = time.perf_counter() - started
    compute = sum(v for key, v in timer.seconds.items() if key not in ("load", "write", "check"))
    result = {
        "shard": shard,
        "file": name,
        "users": users.num_rows,
        "rows": candidates.num_rows,
        "users_per_s": round(users.num_rows / compute, 1) if compute else None,
        "seconds": {key: round(v, 3) for key, v in timer.seconds.items()},
        "overlapped_seconds": {key: round(v, 3) for key, v in timer.overlapped.items()},
        "total_seconds": round(elapsed, 2),
        "two_tower_version": ctx.two_tower_version,
        "ranker_version": ctx.ranker_version,
    }
    log.info(
        "shard %d/%d: %d users, %d rows, %s",
        shard,
        num_shards,
        users.num_rows,
        candidates.num_rows,
        result["seconds"],
    )
    return result


# -- 6. publish -----------------------------------------------------------------------------------------
def publish_candidates(
    lake: Lake, ds: dt.date, staging: str, shard_results: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    """Publish ``ds``'s candidates: every shard file must be in ``staging``; the manifest goes last.

    A dry run (``settings.dry_run_users``) publishes nothing and says where the staged files are.

    Raises:
        pipelines.core.lake.ManifestError: a shard file is missing.
    """
    shards = sorted(r["shard"] for r in shard_results)
    expected = list(range(settings.candidates.num_shards))
    if shards != expected:
        raise ValueError(f"ds={ds}: shard results {shards} do not cover shards {expected}")
    files = [LakePaths.shard_file(s) for s in shards]
    metadata = {
        "users": sum(r["users"] for r in shard_results),
        "rows": sum(r["rows"] for r in shard_results),
        "num_shards": len(shards),
        "top_k": settings.candidates.top_k,
        "two_tower_version": shard_results[0]["two_tower_version"] if shard_results else None,
        "ranker_version": shard_results[0]["ranker_version"] if shard_results else None,
        "shards": {
            r["shard"]: {"users": r["users"], "rows": r["rows"], "seconds": r["seconds"]}
            for r in shard_results
        },
    }
    if settings.dry_run_users:
        return {"published": False, "dry_run": True, "staging": lake.uri(staging), **metadata}
    lake.publish(LakePaths.candidates(ds), staging, files, metadata=metadata)
    result = {"published": True, "uri": lake.uri(LakePaths.candidates(ds)), **metadata}
    table = settings.candidates.warehouse_table
    if table:
        # The lake is the source of truth; a failed load fails the task and its retry publishes the
        # same staged files again, then loads.
        from pipelines.core.warehouse import open_warehouse

        with open_warehouse(settings) as warehouse:
            loaded = warehouse.load_published(table, lake, LakePaths.candidates(ds), ds, CANDIDATES)
        result["warehouse"] = {"table": table, "rows": loaded}
    return result
