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

Pure numpy, a few microseconds per chosen slot, so a shard diversifies thousands of users per second.
"""

from __future__ import annotations

import numpy as np

from pipelines.settings import DiversifyConfig

REASON_RANKED = "ranked"
REASON_EXPLORE = "explore"


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
    n = len(item_idx)
    ranked = _ranked_positions(item_idx, scores, item_embeddings, sources, authors, config, min(n, k))

    slot = config.exploration_slot
    if slot is None or pool is None or len(pool) == 0 or slot > k:
        return ranked, [REASON_RANKED] * len(ranked)
    kept = ranked[: k - 1]
    fresh = np.flatnonzero(~np.isin(pool, item_idx[kept]))
    if len(fresh) == 0:
        return ranked, [REASON_RANKED] * len(ranked)
    # Draw among distinct rows so a row listed twice in the pool is not twice as likely.
    _, first = np.unique(pool[fresh], return_index=True)
    choices = fresh[np.sort(first)]
    explore = n + int(choices[rng.integers(len(choices))])
    at = min(slot, len(kept) + 1) - 1
    order = np.concatenate([kept[:at], [explore], kept[at:]]).astype(np.int64)
    reasons = [REASON_RANKED] * len(order)
    reasons[at] = REASON_EXPLORE
    return order, reasons


def _ranked_positions(
    item_idx: np.ndarray,
    scores: np.ndarray,
    item_embeddings: np.ndarray,
    sources: np.ndarray,
    authors: np.ndarray,
    config: DiversifyConfig,
    m: int,
) -> np.ndarray:
    """Positions of the ``m`` candidates chosen by MMR and caps, then score order."""
    if m == 0:
        return np.zeros(0, np.int64)
    # Work in score order: argmax then breaks ties towards the better score (then the earlier position).
    by_score = np.argsort(-scores, kind="stable")
    greedy_slots = min(m, max(config.mmr_depth if config.mmr_lambda < 1 else 0, config.cap_window))
    if greedy_slots == 0:
        return by_score[:m].astype(np.int64)

    span = scores.max() - scores.min()
    relevance = (scores[by_score] - scores.min()) / span if span > 0 else np.zeros(len(scores))
    lam = config.mmr_lambda
    vectors = item_embeddings[item_idx[by_score]].astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    cand_sources = sources[item_idx[by_score]]
    cand_authors = authors[item_idx[by_score]]
    source_count: dict[int, int] = {}
    author_count: dict[int, int] = {}
    # objective = lam * relevance - (1 - lam) * (max similarity to the chosen items), updated in place;
    # a chosen candidate's base relevance becomes -inf so it is never picked again.
    base = lam * relevance
    max_similarity = np.full(len(scores), -np.inf)
    objective = relevance.copy()  # the first slot has nothing to be similar to
    penalty = np.empty(len(scores))
    chosen: list[int] = []
    for slot in range(greedy_slots):
        use_mmr = 0 < slot < config.mmr_depth
        candidates = objective if use_mmr or slot == 0 else np.where(np.isfinite(base), relevance, -np.inf)
        if slot < config.cap_window:
            capped = _over_cap(cand_sources, source_count, config.max_per_source_top) | _over_cap(
                cand_authors, author_count, config.max_per_author_top
            )
            open_slots = np.isfinite(candidates)
            # Relax the caps for this slot only when every remaining candidate breaks one.
            if (open_slots & ~capped).any():
                candidates = np.where(capped, -np.inf, candidates)
        pick = int(np.argmax(candidates))
        chosen.append(pick)
        base[pick] = -np.inf
        objective[pick] = -np.inf
        source = int(cand_sources[pick])
        author = int(cand_authors[pick])
        source_count[source] = source_count.get(source, 0) + 1
        author_count[author] = author_count.get(author, 0) + 1
        if slot + 1 < min(config.mmr_depth, greedy_slots):
            np.maximum(max_similarity, vectors @ vectors[pick], out=max_similarity)
            np.multiply(max_similarity, 1 - lam, out=penalty)
            np.subtract(base, penalty, out=objective)
    taken = np.zeros(len(scores), bool)
    taken[chosen] = True
    rest = np.flatnonzero(~taken)[: m - len(chosen)]
    return by_score[np.concatenate([np.asarray(chosen, np.int64), rest])].astype(np.int64)


def _over_cap(codes: np.ndarray, counts: dict[int, int], cap: int) -> np.ndarray:
    over = np.zeros(len(codes), bool)
    for code, count in counts.items():
        if count >= cap:
            over |= codes == code
    return over


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
