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
import logging
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lake import Lake
from pipelines.schema import CANDIDATES, RANKER, SERVING_INPUTS, TWO_TOWER, LakePaths, check_ds
from pipelines.settings import Settings
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

ENGLISH = "en"
EMBEDDINGS_FILE = "embeddings.parquet"
EXPLORATION_MAX_AGE_DAYS = 3.0
FALLBACK_POOL = 2000


class NoChampionError(RuntimeError):
    """No blessed two-tower model exists yet: train one before the nightly job."""


class EmptyInputsError(RuntimeError):
    """The day has no users or no eligible posts: nothing meaningful can be published."""


class ListInvariantError(RuntimeError):
    """A candidate list broke an invariant; the message names the user and the rule."""


# -- 1. inputs snapshot ---------------------------------------------------------------------------------
def export_inputs(warehouse: Warehouse, lake: Lake, ds: str, settings: Settings) -> dict[str, Any]:
    """Snapshot the serving inputs of ``ds`` from the warehouse into the lake.

    Returns:
        Rows per input file and the dataset URI.

    Raises:
        EmptyInputsError: no users, or no eligible posts, on ``ds`` (nothing is published).
    """
    from pipelines.features import sql_params

    ds = check_ds(ds)
    params = {**sql_params(settings), "max_item_age_days": settings.candidates.max_item_age_days}
    dataset = LakePaths.inputs(ds)
    staging = lake.begin_publish(dataset)
    rows = {}
    for name, sql in SERVING_INPUTS.items():
        table = warehouse.query_file(sql, ds, **params)
        if name in ("users", "items") and table.num_rows == 0:
            raise EmptyInputsError(f"ds={ds}: no {name} to serve ({sql} returned no rows)")
        lake.write_parquet(f"{staging}/{name}.parquet", table)
        rows[name] = table.num_rows
    lake.publish(dataset, staging, [f"{name}.parquet" for name in SERVING_INPUTS], metadata={"rows": rows})
    return {"dataset": lake.uri(dataset), "rows": rows}


def read_input(lake: Lake, ds: str, name: str) -> pa.Table:
    """One published input table of ``ds`` (``users``, ``items``, ``seen`` or ``profiles``)."""
    wanted = f"{name}.parquet"
    for path in lake.manifest_files(LakePaths.inputs(ds)):
        if path.endswith("/" + wanted):
            return lake.read_parquet(path)
    raise FileNotFoundError(f"{lake.uri(LakePaths.inputs(ds))} has no {wanted}")


# -- 2. item embeddings ---------------------------------------------------------------------------------
def champion_version(lake: Lake, kind: str) -> str | None:
    from pipelines.registry import current_champion

    champion = current_champion(lake, kind)
    return champion["version"] if champion else None


def embed_items(lake: Lake, ds: str, settings: Settings) -> dict[str, Any]:
    """Embed the eligible catalog of ``ds`` with the champion item tower and publish the embeddings.

    Raises:
        NoChampionError: no two-tower champion has been promoted yet.
    """
    from pipelines.two_tower import load_towers

    ds = check_ds(ds)
    version = champion_version(lake, TWO_TOWER)
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


def read_embeddings(lake: Lake, ds: str) -> tuple[pa.Table, str]:
    """The published item embeddings of ``ds`` and the two-tower version that made them."""
    dataset = LakePaths.embeddings(ds)
    manifest = lake.read_manifest(dataset)
    return lake.read_parquet(lake.manifest_files(dataset)[0]), manifest["metadata"]["model_version"]


# -- 3. index -------------------------------------------------------------------------------------------
def build_index(lake: Lake, ds: str, settings: Settings) -> dict[str, Any]:
    """Build, recall-check and publish the ScaNN index of ``ds``'s item embeddings.

    The recall is measured on real user queries: the user tower over a sample of ``ds``'s users.

    Raises:
        pipelines.index.IndexRecallError: recall below the configured floor (nothing is published).
    """
    from pipelines.index import build_and_publish_index
    from pipelines.two_tower import load_towers

    ds = check_ds(ds)
    embeddings, version = read_embeddings(lake, ds)
    users = read_input(lake, ds, "users")
    rng = np.random.default_rng(settings.index.recall_sample_queries)
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
    block = max(1, 2**24 // max(len(item_vectors), 1))
    for start in range(0, len(unique_keys), block):
        members = np.flatnonzero((group >= start) & (group < start + block))
        scores = user_vectors[start : start + block] @ item_vectors.T
        known = members[item_row[members] >= 0]
        own = scores[group[known] - start, item_row[known]]
        score[known] = own
        above = (scores[group[known] - start] > own[:, None]).sum(axis=1)
        rank[known] = np.minimum(above + 1, depth + 1)
    if np.isnan(score).any():
        # Posts missing from the catalog (deleted since) rank last with the lowest observed score.
        score[np.isnan(score)] = np.nanmin(score) if np.isfinite(score).any() else 0.0
    return np.column_stack([score, rank])


# -- 4. shards ------------------------------------------------------------------------------------------
def shard_of(user_ids: np.ndarray | list[str], num_shards: int) -> np.ndarray:
    """The shard of each user: ``crc32(utf-8 id) % num_shards``, stable everywhere."""
    return np.fromiter(
        (zlib.crc32(u.encode()) % num_shards for u in user_ids), dtype=np.int64, count=len(user_ids)
    )


def dry_run_sample(users: pa.Table, n: int) -> pa.Table:
    """A seeded sample of ``n`` users, the same in every shard task of a dry run."""
    picked = np.sort(np.random.default_rng(0).permutation(users.num_rows)[:n])
    return users.take(pa.array(picked))


def plan_shards(lake: Lake, ds: str, settings: Settings) -> list[dict[str, Any]]:
    """Open a fresh staging folder for ``ds``'s candidates and list one work item per shard."""
    ds = check_ds(ds)
    staging = lake.begin_publish(LakePaths.candidates(ds))
    n = settings.candidates.num_shards
    return [{"shard": i, "num_shards": n, "staging": staging} for i in range(n)]


# -- 5. per-shard serving -------------------------------------------------------------------------------
@dataclasses.dataclass
class ServingContext:
    """Everything a shard needs that is the same for all users of ``ds``.

    Item row ``j`` of ``items`` is datapoint ``j`` of the index and row ``j`` of ``item_vectors``.
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


def _codes(values: list[str | None], vocabulary: dict[str, int]) -> np.ndarray:
    return np.fromiter(
        (vocabulary.setdefault(v or "", len(vocabulary)) for v in values), np.int64, len(values)
    )


def load_context(lake: Lake, ds: str, settings: Settings) -> ServingContext:
    """Load the catalog, embeddings, index and models of ``ds`` for serving."""
    from pipelines.index import load_index
    from pipelines.ranker import load_ranker
    from pipelines.two_tower import load_towers

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
    tag_codes = _codes(pc.list_flatten(tag_lists).to_pylist(), tags)
    lengths = pc.fill_null(pc.list_value_length(tag_lists), 0).to_numpy()
    engagements = items.column("engagements_7d").to_numpy().astype(np.float64)
    popular = np.argsort(-engagements, kind="stable")[:FALLBACK_POOL]
    age = items.column("item_age_days").to_numpy()
    impressions = items.column("impressions_7d").to_numpy()
    fresh = np.flatnonzero(age <= EXPLORATION_MAX_AGE_DAYS)
    exploration = fresh[impressions[fresh] <= np.quantile(impressions[fresh], 0.25)] if len(fresh) else fresh

    ranker_version = champion_version(lake, RANKER)
    return ServingContext(
        items=items,
        item_ids=item_ids,
        item_vectors=vectors,
        item_language=_codes(items.column("language").to_pylist(), languages),
        item_source=_codes(items.column("source").to_pylist(), sources),
        item_author=_codes(items.column("author").to_pylist(), authors),
        tag_indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        tag_codes=tag_codes,
        languages=languages,
        sources=sources,
        tags=tags,
        popular=popular,
        exploration=exploration,
        index=index,
        towers=load_towers(lake, version),
        ranker=load_ranker(lake, ranker_version) if ranker_version else None,
        two_tower_version=version,
        ranker_version=ranker_version,
    )


@dataclasses.dataclass
class UserBatch:
    """Codes of one batch of users, aligned with the rows of ``users``."""

    users: pa.Table
    language: np.ndarray
    blocked_sources: list[np.ndarray]
    blocked_tags: list[np.ndarray]
    selected_tags: list[np.ndarray]
    seen_keys: np.ndarray  # user_row * n_items + item_row, sorted

    @classmethod
    def build(cls, users: pa.Table, seen: pa.Table, ctx: ServingContext) -> UserBatch:
        n_items = len(ctx.item_ids)

        def code_lists(column: str, vocabulary: dict[str, int]) -> list[np.ndarray]:
            return [
                np.array([vocabulary[v] for v in (values or []) if v in vocabulary], dtype=np.int64)
                for values in users.column(column).to_pylist()
            ]

        row_of_user = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
        row_of_item = {it: j for j, it in enumerate(ctx.item_ids)}
        seen_keys = np.array(
            [
                row_of_user[u] * n_items + row_of_item[i]
                for u, i in zip(
                    seen.column("user_id").to_pylist(), seen.column("item_id").to_pylist(), strict=True
                )
                if u in row_of_user and i in row_of_item
            ],
            dtype=np.int64,
        )
        language = np.array([ctx.languages.get(v or "", -1) for v in users.column("language").to_pylist()])
        return cls(
            users=users,
            language=language,
            blocked_sources=code_lists("blocked_sources", ctx.sources),
            blocked_tags=code_lists("blocked_tags", ctx.tags),
            selected_tags=code_lists("selected_tags", ctx.tags),
            seen_keys=np.unique(seen_keys),
        )


def allowed(ctx: ServingContext, batch: UserBatch, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which (user, post) pairs may be shown: ``rows[i]`` is a user row, ``positions[i, j]`` a post row.

    A post is out when it was already seen, is in a blocked source or has a blocked tag, or is in a
    language other than the user's and English. Negative positions (index padding) are out too.
    """
    ok = positions >= 0
    p = np.maximum(positions, 0)
    language = ctx.item_language[p]
    ok &= (language == batch.language[rows][:, None]) | (language == ctx.languages[ENGLISH])
    keys = rows[:, None] * len(ctx.item_ids) + p
    ok &= ~np.isin(keys, batch.seen_keys)
    for i, row in enumerate(rows):
        if len(batch.blocked_sources[row]):
            ok[i] &= ~np.isin(ctx.item_source[p[i]], batch.blocked_sources[row])
        if len(batch.blocked_tags[row]):
            ok[i] &= ~_has_any_tag(ctx, p[i], batch.blocked_tags[row])
    return ok


def _has_any_tag(ctx: ServingContext, items: np.ndarray, tags: np.ndarray) -> np.ndarray:
    starts, ends = ctx.tag_indptr[items], ctx.tag_indptr[items + 1]
    lengths = ends - starts
    flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(
        lengths.sum()
    )
    hit = np.isin(ctx.tag_codes[flat], tags).astype(np.int64)
    return np.bincount(np.repeat(np.arange(len(items)), lengths), weights=hit, minlength=len(items)) > 0


@dataclasses.dataclass
class StageTimer:
    """Wall seconds per stage, summed over batches."""

    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def __call__(self, name: str) -> _Timing:
        return _Timing(self, name)


class _Timing:
    def __init__(self, timer: StageTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.timer.seconds[self.name] = self.timer.seconds.get(self.name, 0.0) + elapsed


def compute_candidates(
    ctx: ServingContext, users: pa.Table, seen: pa.Table, settings: Settings, timer: StageTimer | None = None
) -> pa.Table:
    """Ranked, diversified top-K lists for ``users``, as a table with the ``CANDIDATES`` schema.

    Args:
        ctx: the day's catalog, index and models.
        users: rows of the ``users`` input (user features), one per user.
        seen: ``user_id, item_id`` pairs already shown or engaged with.
        settings: ``candidates``, ``diversify`` and ``index`` sections.
        timer: collects seconds per stage when given.
    """
    timer = timer or StageTimer()
    parts = [
        _batch_lists(ctx, UserBatch.build(users.slice(start, size), seen, ctx), settings, timer)
        for start, size in _batches(users.num_rows, settings.candidates.user_batch_size)
    ]
    return pa.concat_tables(parts) if parts else CANDIDATES.empty_table()


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(size, n - start)


def _batch_lists(ctx: ServingContext, batch: UserBatch, settings: Settings, timer: StageTimer) -> pa.Table:
    from pipelines.diversify import diversify
    from pipelines.ranker import RankingPairs

    cfg, k = settings.candidates, settings.candidates.top_k
    n_users = batch.users.num_rows
    rows = np.arange(n_users)
    with timer("embed_users"):
        queries = ctx.towers.embed_users(batch.users)
    with timer("retrieve"):
        positions, retrieval_scores = ctx.index.search_positions(queries, min(cfg.top_n, len(ctx.item_ids)))
    with timer("filter"):
        ok = allowed(ctx, batch, rows, positions)
        pair_user, pair_slot = np.nonzero(ok)
        pair_item = positions[pair_user, pair_slot]
        pair_retrieval = retrieval_scores[pair_user, pair_slot].astype(np.float64)
    with timer("rank"):
        if ctx.ranker is not None and len(pair_user):
            pairs = RankingPairs(
                users=batch.users,
                items=ctx.items,
                user_row=pair_user,
                item_row=pair_item,
                retrieval_score=pair_retrieval,
                retrieval_rank=(pair_slot + 1).astype(np.float64),
            )
            pair_score = ctx.ranker.score_pairs(pairs)
        else:
            pair_score = pair_retrieval
        order = np.lexsort((-pair_score, pair_user))
        pair_user, pair_item = pair_user[order], pair_item[order]
        pair_score, pair_retrieval = pair_score[order], pair_retrieval[order]
        bounds = np.searchsorted(pair_user, np.arange(n_users + 1))
    reason_ranked = "ranked" if ctx.ranker is not None else "retrieved"
    out_user, out_item, out_score, out_retrieval, out_reason = [], [], [], [], []
    with timer("diversify"):
        explore_ok = (
            allowed(ctx, batch, rows, np.broadcast_to(ctx.exploration, (n_users, len(ctx.exploration))))
            if len(ctx.exploration)
            else np.zeros((n_users, 0), bool)
        )
        rng = np.random.default_rng(
            [settings.diversify.seed, zlib.crc32(batch.users.column("user_id")[0].as_py().encode())]
        )
        for u in range(n_users):
            lo, hi = bounds[u], bounds[u + 1]
            pool = min(hi - lo, max(settings.diversify.mmr_depth, k) * 2)
            items = pair_item[lo : lo + pool]
            scores = pair_score[lo : lo + pool]
            pool_items = ctx.exploration[explore_ok[u]]
            picked, reasons = diversify(
                items,
                scores,
                ctx.item_vectors,
                ctx.item_source,
                ctx.item_author,
                settings.diversify,
                pool_items,
                rng,
                k,
            )
            # Positions >= len(items) name the exploration post, which has no ranker or retrieval score:
            # it is shown at the score of the slot above it.
            n = len(items)
            from_list = picked < n
            chosen = np.empty(len(picked), np.int64)
            chosen[from_list] = items[picked[from_list]]
            chosen[~from_list] = pool_items[picked[~from_list] - n]
            chosen_scores = np.full(len(picked), np.nan)
            chosen_scores[from_list] = scores[picked[from_list]]
            chosen_retrieval = np.full(len(picked), np.nan)
            chosen_retrieval[from_list] = pair_retrieval[lo : lo + pool][picked[from_list]]
            chosen_scores = _fill_from_above(chosen_scores)
            reasons = [reason_ranked if r == "ranked" else r for r in reasons]
            if len(chosen) < k:
                extra = _fallback(ctx, batch, u, chosen, k - len(chosen))
                chosen = np.concatenate([chosen, extra])
                floor = chosen_scores.min() if len(chosen_scores) else 0.0
                chosen_scores = np.concatenate([chosen_scores, floor - 1.0 - np.arange(len(extra))])
                chosen_retrieval = np.concatenate([chosen_retrieval, np.full(len(extra), np.nan)])
                reasons = [*reasons, *(["fallback"] * len(extra))]
            out_user.append(np.full(len(chosen), u))
            out_item.append(chosen)
            out_score.append(np.minimum.accumulate(chosen_scores) if len(chosen_scores) else chosen_scores)
            out_retrieval.append(chosen_retrieval)
            out_reason.extend(reasons)
    with timer("assemble"):
        user_rows = np.concatenate(out_user) if out_user else np.zeros(0, np.int64)
        item_rows = np.concatenate(out_item) if out_item else np.zeros(0, np.int64)
        rank = np.concatenate([np.arange(1, len(x) + 1) for x in out_item]) if out_item else np.zeros(0)
        return pa.table(
            {
                "user_id": batch.users.column("user_id").take(pa.array(user_rows)),
                "rank": pa.array(rank, pa.int32()),
                "item_id": pa.array(ctx.item_ids[item_rows].tolist(), pa.string()),
                "score": pa.array(np.concatenate(out_score) if out_score else [], pa.float32()),
                "retrieval_score": pa.array(
                    np.concatenate(out_retrieval) if out_retrieval else [], pa.float32(), from_pandas=True
                ),
                "reason": pa.array(out_reason, pa.string()),
            },
            schema=CANDIDATES,
        )


def _fill_from_above(scores: np.ndarray) -> np.ndarray:
    """Replace each NaN with the score just above it (the top one with the best score of the list)."""
    out = scores.copy()
    for i in np.flatnonzero(np.isnan(out)):
        above = out[:i][~np.isnan(out[:i])]
        out[i] = above[-1] if len(above) else np.nanmax(out) if np.isfinite(out).any() else 0.0
    return out


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
    catalog posts, nothing seen or blocked, and scores that never increase down the list."""
    users = candidates.column("user_id").to_numpy(zero_copy_only=False)
    row_of_user = {u: i for i, u in enumerate(batch.users.column("user_id").to_pylist())}
    row_of_item = {it: j for j, it in enumerate(ctx.item_ids)}
    items = candidates.column("item_id").to_pylist()
    unknown = [it for it in items if it not in row_of_item]
    if unknown:
        raise ListInvariantError(f"posts not in the catalog: {unknown[:3]}")
    rows = np.array([row_of_user[u] for u in users], dtype=np.int64)
    item_rows = np.array([row_of_item[it] for it in items], dtype=np.int64)
    scores = candidates.column("score").to_numpy()
    bounds = np.flatnonzero(np.diff(rows)) + 1
    for group in np.split(np.arange(len(rows)), bounds):
        if not len(group):
            continue
        user = users[group[0]]
        if len(group) > k:
            raise ListInvariantError(f"user {user}: {len(group)} posts, more than top_k={k}")
        if len(np.unique(item_rows[group])) != len(group):
            raise ListInvariantError(f"user {user}: a post appears twice")
        if np.any(np.diff(scores[group]) > 0):
            raise ListInvariantError(f"user {user}: scores increase down the list")
        ok = allowed(ctx, batch, rows[group[:1]], item_rows[group][None, :])[0]
        if not ok.all():
            bad = ctx.item_ids[item_rows[group][~ok][0]]
            raise ListInvariantError(f"user {user}: post {bad} is seen, blocked or in another language")


def candidates_for_shard(
    lake: Lake, ds: str, shard: int, num_shards: int, staging: str, settings: Settings
) -> dict[str, Any]:
    """Compute and write the candidate lists of one shard of ``ds``'s users into ``staging``.

    Returns:
        The file written, rows, users, users/s overall and seconds per stage.
    """
    ds = check_ds(ds)
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
    candidates = compute_candidates(ctx, users, seen, settings, timer)
    with timer("check"):
        check_lists(candidates, ctx, UserBatch.build(users, seen, ctx), settings.candidates.top_k)
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
    lake: Lake, ds: str, staging: str, shard_results: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    """Publish ``ds``'s candidates: every shard file must be in ``staging``; the manifest goes last.

    A dry run (``settings.dry_run_users``) publishes nothing and says where the staged files are.

    Raises:
        pipelines.lake.ManifestError: a shard file is missing.
    """
    ds = check_ds(ds)
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
    return {"published": True, "uri": lake.uri(LakePaths.candidates(ds)), **metadata}


def read_candidates(lake: Lake, ds: str) -> pa.Table:
    """All published candidate lists of ``ds``."""
    return pa.concat_tables(lake.read_parquet(path) for path in lake.manifest_files(LakePaths.candidates(ds)))
