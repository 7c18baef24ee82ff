"""The candidate lists of a batch of users: the served system's retriever (top-N), filters, LightGBM rank,
diversify and top-K, with a fallback of popular allowed posts for users whose list would come out short.
Reasons a published row carries: ``ranked`` or ``retrieved`` (with or without a ranker), ``explore`` (the
exploration slot) and ``fallback``."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.schema import CANDIDATES
from pipelines.core.settings import DiversifyConfig, Settings
from pipelines.serving.arrays import concat_ranges
from pipelines.serving.batch import UserBatch
from pipelines.serving.context import ServingContext
from pipelines.serving.exploration import ExplorationPools
from pipelines.serving.filters import allowed
from pipelines.serving.timing import StageTimer


def lists_for(ctx: ServingContext, batch: UserBatch, settings: Settings, timer: StageTimer) -> pa.Table:
    """The lists of ``batch``'s users, ``user_batch_size`` users at a time.

    The next batch's retriever queries (the user tower, for the two-tower) and search run in a background
    thread while a batch is filtered, ranked and diversified: both are mostly native code that releases the
    GIL, so they use the cores the single-threaded numpy steps leave idle. Batches are independent, so the
    lists are those of one batch after the other.

    Returns:
        The lists as rows of the ``CANDIDATES`` schema, user after user in the order of ``batch.users``.
    """
    spans = list(_batches(batch.users.num_rows, settings.candidates.user_batch_size))
    top_n = retrieval_depth(ctx, settings)
    embed = timer.background("embed_users", ctx.retriever.queries)
    search = timer.background("retrieve", ctx.retriever.search)
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


def retrieved_pairs(ctx: ServingContext, batch: UserBatch, settings: Settings) -> pa.Table:
    """The filtered retrieval of ``batch``'s users, before ranking: what the ranker would re-order.

    Returns:
        ``user_id, item_id, retrieval_score, retrieval_rank`` (the post's 1-based place in the user's
        retrieval, as the ranker sees it), user after user.
    """
    top_n = retrieval_depth(ctx, settings)
    parts = []
    for start, size in _batches(batch.users.num_rows, settings.candidates.user_batch_size):
        part = batch.rows(start, start + size, ctx)
        positions, scores = ctx.retriever.search(ctx.retriever.queries(part.users), top_n)
        ok = allowed(ctx, part, np.arange(size), positions)
        user, slot = np.nonzero(ok)
        parts.append(
            pa.table(
                {
                    "user_id": part.users.column("user_id").take(pa.array(user)),
                    "item_id": ctx.item_id_array.take(pa.array(positions[user, slot])),
                    "retrieval_score": pa.array(scores[user, slot].astype(np.float64)),
                    "retrieval_rank": pa.array((slot + 1).astype(np.float64)),
                }
            )
        )
    return pa.concat_tables(parts) if parts else pa.table({"user_id": pa.array([], pa.string())})


def retrieval_depth(ctx: ServingContext, settings: Settings) -> int:
    """Posts retrieved per user: the served system's depth, else ``candidates.top_n``, at most the catalog."""
    return min(ctx.system.retrieval_depth or settings.candidates.top_n, len(ctx.item_ids))


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
            pairs = RankingPairs(
                users=batch.users,
                items=ctx.ranker_items,
                user_row=pair_user,
                item_row=pair_item,
                retrieval_score=retrieval_scores[pair_user, pair_slot],
                retrieval_rank=pair_slot + 1,
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
        pool_slot = by_score[pool_user, concat_ranges(np.zeros(n_users, np.int64), depth)]
        lists = CandidateLists(
            np.concatenate([[0], np.cumsum(depth)]),
            positions[pool_user, pool_slot],
            score_grid[pool_user, pool_slot],
        )
        rng = np.random.default_rng(
            [settings.diversify.seed, zlib.crc32(batch.users.column("user_id")[0].as_py().encode())]
        )
        config = _diversification(ctx, settings, k)
        explore = ctx.system.diversify and config.exploration_slot is not None and len(ctx.exploration)
        chosen = diversify_lists(
            lists,
            ctx.unit_item_vectors,
            ctx.item_source,
            ctx.item_author,
            config,
            ExplorationPools(ctx, batch) if explore else None,
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


def _diversification(ctx: ServingContext, settings: Settings, k: int) -> DiversifyConfig:
    """The served system's diversification; when it has none, one that changes nothing: pure relevance,
    no caps, no exploration slot."""
    if not ctx.system.diversify:
        return settings.diversify.model_copy(
            update={
                "mmr_lambda": 1.0,
                "max_per_source_top": k,
                "max_per_author_top": k,
                "exploration_slot": None,
            }
        )
    if ctx.system.mmr_lambda is None:
        return settings.diversify
    return settings.diversify.model_copy(update={"mmr_lambda": ctx.system.mmr_lambda})


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
    explore = np.flatnonzero(~from_list)
    after = explore[within[explore] > 0]
    score[after] = score[after - 1]
    lead = explore[within[explore] == 0]
    if len(lead):
        # A list has one exploration post: the best of the others is the maximum over the whole list
        # with that post left out (-inf, then 0.0 when it is alone).
        bounds = np.ravel(np.column_stack([chosen.indptr[owner[lead]], chosen.indptr[owner[lead] + 1]]))
        best = np.maximum.reduceat(np.append(np.where(from_list, score, -np.inf), -np.inf), bounds)[::2]
        score[lead] = np.where(np.isfinite(best), best, 0.0)
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
        extra_within = length[extra_owner] + concat_ranges(np.zeros(n_users, np.int64), added)
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


def _has_any_tag(ctx: ServingContext, items: np.ndarray, tags: np.ndarray) -> np.ndarray:
    starts, ends = ctx.tag_indptr[items], ctx.tag_indptr[items + 1]
    lengths = ends - starts
    flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(
        lengths.sum()
    )
    hit = np.isin(ctx.tag_codes[flat], tags).astype(np.int64)
    return np.bincount(np.repeat(np.arange(len(items)), lengths), weights=hit, minlength=len(items)) > 0
