"""Diversification stage: re-rank one user's scored candidates into a varied top-K.

Runs per user inside the candidates stage, after ranking; reads nothing and writes nothing itself. Given
the candidates' scores and the catalog's item embeddings, sources and authors, it builds the final list:

1. the first ``mmr_depth`` slots by maximal marginal relevance (MMR): each slot takes the candidate with
   the best ``lambda * relevance - (1 - lambda) * max cosine similarity to the items already chosen``,
   where relevance is the score min-max normalised over the user's candidates, so ``lambda`` means the
   same whatever the ranker's score scale;
2. within the first ``cap_window`` slots, at most ``max_per_source_top`` items of one source and
   ``max_per_author_top`` of one author; a slot ignores the caps only when no remaining candidate fits them;
3. the remaining slots in score order;
4. optionally, at 1-based slot ``exploration_slot``, one item drawn by the seeded generator from the
   exploration pool (fresh, under-exposed items), never one already in the list.

:func:`diversify` makes one list; :func:`diversify_lists` makes a batch of lists at once with the very
same result per list, each MMR step vectorised across the lists (pure numpy, a few thousand users per
second and core). The similarity of a choice to the other candidates stays one matrix-vector product per
list of the list's own shape, so every score, and every tie, is bit for bit what a list alone gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipelines.core.settings import DiversifyConfig
from pipelines.serving.arrays import concat_ranges

REASON_RANKED = "ranked"
REASON_EXPLORE = "explore"
# Candidates ranked together when lists are diversified together: a block's (lists, n, dim) vectors and
# score rows stay in cache across the MMR slots (2**14 entries of 64 dims: 4 MB of vectors).
BLOCK_ENTRIES = 2**14


@dataclass(frozen=True)
class CandidateLists:
    """The scored candidates of several users, list after list.

    List ``u`` is entries ``indptr[u]:indptr[u + 1]`` of ``item_idx`` (catalog rows, no duplicates within a
    list) and ``scores`` (finite, higher is better, any scale).
    """

    indptr: np.ndarray
    item_idx: np.ndarray
    scores: np.ndarray

    @property
    def n_lists(self) -> int:
        return len(self.indptr) - 1


@dataclass(frozen=True)
class DiversifiedLists:
    """Final lists, list after list: list ``u`` is entries ``indptr[u]:indptr[u + 1]`` of ``position``.

    ``position[j] >= 0`` is the candidate at that position of the user's input list; ``-1`` marks the
    exploration item, which is ``explore[u]`` (what :meth:`ExplorationPool.pick` returned; -1 when none).
    """

    indptr: np.ndarray
    position: np.ndarray
    explore: np.ndarray


class ExplorationPool(Protocol):
    """The exploration items open to each list of a batch."""

    def pick(
        self, exclude_indptr: np.ndarray, exclude: np.ndarray, draw: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """One exploration item per list, -1 for none.

        List ``u`` chooses among its distinct pool items that are not in its excluded catalog rows,
        ``exclude[exclude_indptr[u]:exclude_indptr[u + 1]]``. ``draw(counts)`` takes the number of such
        items of every list and returns, for each list with a non-zero count (in list order), the 0-based
        index of its pick among them in pool order.
        """
        ...


def diversify(
    item_idx: np.ndarray,
    scores: np.ndarray,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    config: DiversifyConfig,
    exploration_pool: np.ndarray | None,
    rng: np.random.Generator,
    k: int,
) -> tuple[np.ndarray, list[str]]:
    """Choose and order one user's final top-``k`` from scored candidates.

    Args:
        item_idx: ``(n,)`` catalog rows of the candidates, no duplicates.
        scores: ``(n,)`` finite ranker scores of the candidates, higher is better (any scale).
        item_embeddings: ``(n_catalog, d)`` item vectors, indexed by catalog row (normalised here).
        sources: ``(n_catalog,)`` integer source code of each catalog row.
        authors: ``(n_catalog,)`` integer author code of each catalog row.
        config: MMR, cap and exploration settings.
        exploration_pool: catalog rows eligible for the exploration slot, or None for no exploration.
        rng: draws the exploration item; the same seed gives the same list.
        k: length of the list wanted.

    Returns:
        ``(order, reasons)``. ``order`` holds *positions*, best first: ``p < n`` is the candidate
        ``item_idx[p]``, and ``p >= n`` is the exploration item ``exploration_pool[p - n]``. ``reasons`` has
        one entry per position: ``"explore"`` for the exploration item, ``"ranked"`` for the others. The
        length is ``min(k, n)``, plus one when the exploration slot is used on a list shorter than ``k``
        (the item then goes right after the last candidate, if that comes before its slot). No catalog row
        appears twice.

    Raises:
        ValueError: mismatched lengths, non-finite scores, duplicate candidates, or catalog rows out of
            range; the message names the offending positions.
    """
    item_idx, scores = _check_inputs(item_idx, scores, item_embeddings, sources, authors, k)
    pool = _check_pool(exploration_pool, len(item_embeddings))
    lists = CandidateLists(np.array([0, len(item_idx)], np.int64), item_idx, scores)
    chosen = _diversify_checked(
        lists, item_embeddings, sources, authors, config, None if pool is None else ArrayPools([pool]), rng, k
    )
    n = len(item_idx)
    order = np.where(chosen.position >= 0, chosen.position, n + chosen.explore[0]).astype(np.int64)
    return order, [REASON_EXPLORE if p < 0 else REASON_RANKED for p in chosen.position.tolist()]


def unit_rows(vectors: np.ndarray, block: int = 65_536) -> np.ndarray:
    """The rows of ``vectors`` as float32 unit vectors, computed exactly as :func:`diversify` does (an
    all-zero row stays zero). Computed ``block`` rows at a time to bound the temporary memory."""
    out = np.empty(np.shape(vectors), np.float32)
    for start in range(0, len(out), block):
        part = np.asarray(vectors[start : start + block]).astype(np.float32, copy=False)
        norms = np.linalg.norm(part, axis=-1, keepdims=True)
        out[start : start + block] = part / np.where(norms > 0, norms, 1.0)
    return out


def diversify_lists(
    lists: CandidateLists,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    config: DiversifyConfig,
    exploration: ExplorationPool | None,
    rng: np.random.Generator,
    k: int,
    unit_vectors: bool = False,
) -> DiversifiedLists:
    """:func:`diversify` for many lists at once, vectorised across lists.

    Each list comes out exactly as :func:`diversify` would make it, called list after list with the same
    ``rng`` (the exploration draws happen in list order) and that list's pool.

    Args:
        lists: the users' scored candidates.
        item_embeddings: ``(n_catalog, d)`` item vectors, indexed by catalog row (normalised here).
        sources: ``(n_catalog,)`` integer source code of each catalog row.
        authors: ``(n_catalog,)`` integer author code of each catalog row.
        config: MMR, cap and exploration settings.
        exploration: each list's exploration items, or None for no exploration.
        rng: draws the exploration items.
        k: length of the lists wanted.
        unit_vectors: ``item_embeddings`` is already the output of :func:`unit_rows`, so it is not
            normalised again (normalising twice would not give the same bits as once).

    Returns:
        The lists, as positions into the input lists plus each list's exploration pick.

    Raises:
        ValueError: malformed ``indptr``, or a list :func:`diversify` would refuse (the message names the
            list, then the positions as :func:`diversify` does).
    """
    _check_lists(lists, item_embeddings, sources, authors, k)
    return _diversify_checked(
        lists, item_embeddings, sources, authors, config, exploration, rng, k, unit_vectors
    )


class ArrayPools:
    """One explicit exploration pool of catalog rows per list, repeats allowed; a pick is a position in
    the list's pool."""

    def __init__(self, pools: list[np.ndarray]) -> None:
        self.pools = pools

    def pick(
        self, exclude_indptr: np.ndarray, exclude: np.ndarray, draw: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        choices = []
        for u, pool in enumerate(self.pools):
            fresh = np.flatnonzero(~np.isin(pool, exclude[exclude_indptr[u] : exclude_indptr[u + 1]]))
            # Draw among distinct rows so a row listed twice in the pool is not twice as likely.
            _, first = np.unique(pool[fresh], return_index=True)
            choices.append(fresh[np.sort(first)])
        counts = np.array([len(c) for c in choices], np.int64)
        picks = np.full(len(self.pools), -1, np.int64)
        drawn = iter(draw(counts).tolist())
        for u in np.flatnonzero(counts):
            picks[u] = choices[u][next(drawn)]
        return picks


def _diversify_checked(
    lists: CandidateLists,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    config: DiversifyConfig,
    exploration: ExplorationPool | None,
    rng: np.random.Generator,
    k: int,
    unit_vectors: bool = False,
) -> DiversifiedLists:
    n_users = lists.n_lists
    ranked_indptr, ranked = _ranked_lists(lists, item_embeddings, sources, authors, config, k, unit_vectors)
    slot = config.exploration_slot
    if slot is None or exploration is None or slot > k:
        return DiversifiedLists(ranked_indptr, ranked, np.full(n_users, -1, np.int64))

    def draw(counts: np.ndarray) -> np.ndarray:
        # One bounded draw per list, in list order: the very numbers (and generator state) of one
        # ``rng.integers(count)`` call per list, list after list.
        return rng.integers(counts[counts > 0].astype(np.int64))

    ranked_len = np.diff(ranked_indptr)
    kept_len = np.minimum(ranked_len, k - 1)
    kept_indptr = np.concatenate([[0], np.cumsum(kept_len)]).astype(np.int64)
    kept_owner = np.repeat(np.arange(n_users), kept_len)
    kept = ranked[ranked_indptr[kept_owner] + np.arange(kept_indptr[-1]) - kept_indptr[kept_owner]]
    explore = exploration.pick(kept_indptr, lists.item_idx[lists.indptr[kept_owner] + kept], draw)
    # A list with an exploration item keeps its first k - 1 candidates and gets the item at its slot (or
    # right after the last candidate, if that comes first).
    has = explore >= 0
    out_len = np.where(has, kept_len + 1, ranked_len)
    at = np.minimum(slot, kept_len + 1) - 1
    indptr = np.concatenate([[0], np.cumsum(out_len)]).astype(np.int64)
    owner = np.repeat(np.arange(n_users), out_len)
    within = np.arange(indptr[-1]) - indptr[owner]
    is_explore = has[owner] & (within == at[owner])
    source = ranked_indptr[owner] + within - (has[owner] & (within > at[owner]))
    padded = np.concatenate([ranked, [-1]])
    position = np.where(is_explore, -1, padded[np.minimum(source, len(ranked))])
    return DiversifiedLists(indptr, position.astype(np.int64), explore)


def _ranked_lists(
    lists: CandidateLists,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    config: DiversifyConfig,
    k: int,
    unit_vectors: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per list, positions of the ``min(n, k)`` candidates chosen by MMR and caps, then score order."""
    n = np.diff(lists.indptr)
    m = np.minimum(n, k)
    indptr = np.concatenate([[0], np.cumsum(m)]).astype(np.int64)
    ranked = np.empty(indptr[-1], np.int64)
    # Longest lists first: a block's lists then have similar lengths, and the lists still choosing at a
    # given slot are a prefix of the block.
    by_length = np.argsort(-n, kind="stable")
    by_length = by_length[m[by_length] > 0]
    start = 0
    while start < len(by_length):
        width = int(n[by_length[start]])
        stop = min(len(by_length), start + max(1, BLOCK_ENTRIES // width))
        block = by_length[start:stop]
        chosen = _rank_block(
            lists, block, n[block], m[block], item_embeddings, sources, authors, config, unit_vectors
        )
        # Row-major order of the mask is list after list, each list's positions in order.
        kept = np.arange(chosen.shape[1]) < m[block][:, None]
        ranked[concat_ranges(indptr[block], m[block])] = chosen[kept]
        start = stop
    return indptr, ranked


def _rank_block(
    lists: CandidateLists,
    users: np.ndarray,
    n: np.ndarray,
    m: np.ndarray,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    config: DiversifyConfig,
    unit_vectors: bool,
) -> np.ndarray:
    """The ranking of a block of lists sorted by length (longest first), ``(lists, max m)`` positions.

    Every list goes through the same steps as a list alone would: the padding of shorter lists is never
    eligible, and the similarity of a choice to the other candidates is one matrix-vector product per list
    of the same shape as for the list alone, so every score is bit for bit the same.
    """
    b, width = len(users), int(n[0])
    col = np.arange(width)
    valid = col < n[:, None]
    entry = lists.indptr[users][:, None] + np.minimum(col, n[:, None] - 1)
    # Work in score order: argmax then breaks ties towards the better score (then the earlier position).
    by_score = np.argsort(np.where(valid, -lists.scores[entry], np.inf), axis=1, kind="stable")
    entry = np.take_along_axis(entry, by_score, axis=1)
    scores = lists.scores[entry]
    items = lists.item_idx[entry]
    rows = np.arange(b)
    greedy = np.minimum(m, max(config.mmr_depth if config.mmr_lambda < 1 else 0, config.cap_window))
    n_slots = int(greedy.max(initial=0))
    chosen = np.zeros((b, max(n_slots, 1)), np.int64)
    lam = config.mmr_lambda
    if n_slots:
        best, worst = scores[:, 0], scores[rows, n - 1]
        span = best - worst
        relevance = np.full((b, width), -np.inf)
        spread = valid & (span > 0)[:, None]
        relevance[valid] = 0.0
        np.divide(scores - worst[:, None], span[:, None], out=relevance, where=spread)
        base = np.full((b, width), -np.inf)
        np.multiply(lam, relevance, out=base, where=valid)
        objective = relevance.copy()  # the first slot has nothing to be similar to
        similar_slots = min(config.mmr_depth, n_slots)
        if similar_slots > 1:
            vectors = item_embeddings[items] if unit_vectors else unit_rows(item_embeddings[items])
            # Padding keeps similarity 0 so its objective stays -inf.
            max_similarity = np.where(valid, -np.inf, 0.0)
            penalty = np.empty((b, width))
            same_length = np.flatnonzero(np.diff(n)) + 1
            groups = list(zip([0, *same_length.tolist()], [*same_length.tolist(), b], strict=True))
        cand_sources, cand_authors = sources[items], authors[items]
        source_count = np.zeros((b, width), np.int64)
        author_count = np.zeros((b, width), np.int64)
        for slot in range(n_slots):
            live = int(np.count_nonzero(greedy > slot))  # the lists still choosing: a prefix
            use_mmr = 0 < slot < config.mmr_depth
            if use_mmr or slot == 0:
                candidates = objective[:live]
            else:
                candidates = np.where(np.isfinite(base[:live]), relevance[:live], -np.inf)
            if slot < config.cap_window:
                capped = (source_count[:live] >= config.max_per_source_top) | (
                    author_count[:live] >= config.max_per_author_top
                )
                # Relax the caps for this slot only when every remaining candidate breaks one.
                fits = (np.isfinite(candidates) & ~capped).any(axis=1)
                candidates = np.where(capped & fits[:, None], -np.inf, candidates)
            pick = np.argmax(candidates, axis=1)
            chosen[:live, slot] = pick
            base[rows[:live], pick] = -np.inf
            objective[rows[:live], pick] = -np.inf
            if slot + 1 < config.cap_window:
                source_count[:live] += cand_sources[:live] == cand_sources[rows[:live], pick][:, None]
                author_count[:live] += cand_authors[:live] == cand_authors[rows[:live], pick][:, None]
            updating = int(np.count_nonzero(greedy > slot + 1)) if slot + 1 < similar_slots else 0
            if updating:
                for lo, hi in groups:
                    if lo >= updating:
                        break
                    length = int(n[lo])
                    group = vectors[lo:hi, :length]
                    picked = vectors[rows[lo:hi], pick[lo:hi]]
                    similarity = np.matmul(group, picked[:, :, None])[:, :, 0]
                    np.maximum(max_similarity[lo:hi, :length], similarity, out=max_similarity[lo:hi, :length])
                np.multiply(max_similarity[:updating], 1 - lam, out=penalty[:updating])
                np.subtract(base[:updating], penalty[:updating], out=objective[:updating])
    # After the greedy slots, the remaining candidates in score order.
    taken = np.zeros((b, width), bool)
    slots = np.arange(chosen.shape[1])
    greedy_mask = slots < greedy[:, None]
    taken[np.repeat(rows, greedy), chosen[greedy_mask]] = True
    open_ = valid & ~taken
    order = np.cumsum(open_, axis=1) - 1
    rest = open_ & (order < (m - greedy)[:, None])
    out = np.zeros((b, int(m.max())), np.int64)
    out[:, : chosen.shape[1]][greedy_mask] = chosen[greedy_mask]
    rest_rows, rest_cols = np.nonzero(rest)
    out[rest_rows, greedy[rest_rows] + order[rest_rows, rest_cols]] = rest_cols
    return np.take_along_axis(by_score, out, axis=1)


def _check_lists(
    lists: CandidateLists, item_embeddings: np.ndarray, sources: np.ndarray, authors: np.ndarray, k: int
) -> None:
    indptr = np.asarray(lists.indptr)
    item_idx, scores = np.asarray(lists.item_idx), np.asarray(lists.scores)
    if (
        indptr.ndim != 1
        or len(indptr) == 0
        or indptr[0] != 0
        or (np.diff(indptr) < 0).any()
        or item_idx.ndim != 1
        or scores.shape != item_idx.shape
        or indptr[-1] != len(item_idx)
    ):
        raise ValueError(
            "candidate lists need indptr from 0 to len(item_idx), never decreasing, and 1-d item_idx and "
            f"scores of one length; got indptr {indptr.tolist()[:3]}...{indptr.tolist()[-1:]}, item_idx "
            f"{item_idx.shape}, scores {scores.shape}"
        )
    if len(item_idx) and not np.issubdtype(item_idx.dtype, np.integer):
        raise ValueError(f"item_idx must hold integer catalog rows, got dtype {item_idx.dtype}")
    n_catalog = len(item_embeddings)
    owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    in_range = (item_idx >= 0) & (item_idx < n_catalog)
    bad = ~in_range | ~np.isfinite(scores.astype(np.float64))
    # A repeated (list, row) pair shows up as equal neighbours among the sorted keys.
    stride = max(n_catalog, 1)
    keys = np.sort(owner * stride + np.where(in_range, item_idx, 0))
    twice = keys[1:][keys[1:] == keys[:-1]] // stride
    suspects = [int(owner[i]) for i in np.flatnonzero(bad)[:1]] + [int(u) for u in twice[:1]]
    _check_inputs(item_idx[:0], scores[:0], item_embeddings, sources, authors, k)
    if suspects:
        first = min(suspects)
        span = slice(indptr[first], indptr[first + 1])
        try:
            _check_inputs(item_idx[span], scores[span], item_embeddings, sources, authors, k)
        except ValueError as exc:
            raise ValueError(f"candidate list {first}: {exc}") from None


def _check_inputs(
    item_idx: np.ndarray,
    scores: np.ndarray,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    item_idx = np.asarray(item_idx)
    scores = np.asarray(scores, dtype=np.float64)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if item_idx.ndim != 1 or scores.shape != item_idx.shape:
        raise ValueError(f"item_idx {item_idx.shape} and scores {scores.shape} must be 1-d of one length")
    if len(item_idx) and not np.issubdtype(item_idx.dtype, np.integer):
        raise ValueError(f"item_idx must hold integer catalog rows, got dtype {item_idx.dtype}")
    n_catalog = len(item_embeddings)
    if np.ndim(item_embeddings) != 2 or len(sources) != n_catalog or len(authors) != n_catalog:
        raise ValueError(
            f"catalog arrays disagree: item_embeddings {np.shape(item_embeddings)}, sources {len(sources)}, "
            f"authors {len(authors)}"
        )
    out_of_range = (item_idx < 0) | (item_idx >= n_catalog)
    if out_of_range.any():
        bad = np.flatnonzero(out_of_range)[:5]
        raise ValueError(
            f"item_idx positions {bad.tolist()} hold rows {item_idx[bad].tolist()} outside the catalog "
            f"of {n_catalog} items"
        )
    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        raise ValueError(f"scores at positions {np.flatnonzero(not_finite)[:5].tolist()} are not finite")
    unique, counts = np.unique(item_idx, return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1][:5]
        where = {int(d): np.flatnonzero(item_idx == d).tolist() for d in dupes}
        raise ValueError(f"duplicate candidates (catalog row: positions): {where}")
    return item_idx.astype(np.int64, copy=False), scores


def _check_pool(pool: np.ndarray | None, n_catalog: int) -> np.ndarray | None:
    if pool is None:
        return None
    pool = np.asarray(pool)
    if pool.ndim != 1 or (len(pool) and not np.issubdtype(pool.dtype, np.integer)):
        raise ValueError(f"exploration_pool must be 1-d integer catalog rows, got {pool.dtype} {pool.shape}")
    out_of_range = (pool < 0) | (pool >= n_catalog)
    if out_of_range.any():
        bad = np.flatnonzero(out_of_range)[:5]
        raise ValueError(
            f"exploration_pool positions {bad.tolist()} hold rows {pool[bad].tolist()} outside the catalog "
            f"of {n_catalog} items"
        )
    return pool.astype(np.int64, copy=False)
