"""Offline evaluation of retrieval models on a temporal hold-out, with the baselines every model must beat.

The hold-out mirrors what the nightly job does: for each eval user, the query is the user's state at the
start of the eval window, the ground truth is the set of posts the user engaged with inside the window, and
the ranking runs over the FULL catalog with the posts the user had already engaged with before the window
removed (they would be filtered out of a digest anyway). Every model is scored on the same
:class:`Holdout`, so the numbers of a challenger, the champion and the baselines are comparable:

* ``most_popular``: engagement counts in the ``popularity_window_days`` before the eval window;
* ``item_knn``: item-item cosine similarity on the binary user-item matrix of the training window, a user
  scored by the sum of similarities to the posts they engaged with (ties and cold users fall back to
  popularity).

Metrics (pure numpy, see the functions below): Recall@K, NDCG@K and catalog coverage@K per K in
``EvaluationConfig.ks``.

Reads: training examples (the ``split`` column says train or eval) and the catalog, as Arrow tables.
Writes nothing; callers store the returned dict as ``metrics.json``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipelines.core.settings import EvaluationConfig
from pipelines.core.tables import as_table, require_columns

log = logging.getLogger(__name__)

USER_STATE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "history",
    "selected_tags",
    "account_age_days",
    "activity_lookback",
)
EXAMPLE_KEY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_ts", "split")

# A scorer maps row indices of Holdout.users to a (len(rows), n_items) score matrix over Holdout.item_ids.
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Holdout:
    """The eval users, their ground truth and what they had seen, indexed against one catalog.

    Attributes:
        eval_start: first instant of the eval window (midnight UTC of the earliest eval ``ds``).
        users: query state of each eval user at ``eval_start`` (``USER_STATE_COLUMNS``); row ``u`` of
            every matrix below belongs to row ``u`` of this table.
        catalog: the ranked catalog; column ``j`` of every matrix is ``catalog`` row ``j``.
        item_ids: ``catalog["item_id"]`` as a numpy array.
        truth: (n_users, n_items) 0/1, posts engaged with in the eval window and not seen before it.
        seen: (n_users, n_items) 0/1, posts engaged with before the eval window; never ranked.
        train_matrix: (n_train_users, n_items) 0/1 user-item matrix of the training window (for item-kNN).
        popularity: (n_items,) engagement counts in the popularity window before ``eval_start``.
        dropped_truth: eval engagements that could not count (post not in the catalog or already seen).
    """

    eval_start: dt.datetime
    users: pa.Table
    catalog: pa.Table
    item_ids: np.ndarray
    truth: sp.csr_matrix
    seen: sp.csr_matrix
    train_matrix: sp.csr_matrix
    popularity: np.ndarray
    dropped_truth: int

    @property
    def n_users(self) -> int:
        return self.users.num_rows

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def summary(self) -> dict[str, object]:
        return {
            "eval_start": self.eval_start.isoformat(),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_truth": int(self.truth.nnz),
            "dropped_truth": self.dropped_truth,
        }


# -- metric functions (pure numpy) ---------------------------------------------------------------------
def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores per row, best first; ties go to the lower index.

    Args:
        scores: (n_rows, n_items) float scores; ``-inf`` marks items that must never be returned first.
        k: how many per row; capped at ``n_items``.

    Returns:
        (n_rows, min(k, n_items)) int64 array.

    Raises:
        ValueError: ``scores`` is not 2-D or ``k`` < 1.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_items = scores.shape[1]
    k = min(k, n_items)
    if k < n_items:
        # argpartition keeps the top k in arbitrary order; a stable sort of the negated scores then orders
        # them, breaking ties by the smaller column index.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part.sort(axis=1)
    else:
        part = np.tile(np.arange(n_items), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user recall: relevant items in the first ``k`` over all relevant items.

    Args:
        hits: (n_users, >=k) bool, ``hits[u, r]`` is whether the item at rank ``r`` is relevant.
        n_relevant: (n_users,) number of relevant items per user (> 0).
        k: cut-off.
    """
    return hits[:, :k].sum(axis=1) / n_relevant


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG with binary gains: DCG of the first ``k`` over the DCG of a perfect ranking.

    Args:
        hits: (n_users, >=k) bool hits by rank.
        n_relevant: (n_users,) number of relevant items per user (> 0).
        k: cut-off.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return dcg / ideal


def catalog_coverage_at_k(top: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalog that appears in at least one user's first ``k``."""
    return len(np.unique(top[:, :k])) / n_items


# -- hold-out ------------------------------------------------------------------------------------------
def build_holdout(
    examples: pa.Table | pd.DataFrame,
    catalog: pa.Table | pd.DataFrame,
    config: EvaluationConfig,
    users: pa.Table | pd.DataFrame | None = None,
) -> Holdout:
    """Index the eval window of ``examples`` against ``catalog``.

    Args:
        examples: training examples with at least ``user_id, item_id, event_ts, split`` (and the user
            state columns when ``users`` is not given).
        catalog: the posts to rank (``item_id`` unique, plus item features for model scorers).
        config: ``max_eval_users`` (a seeded sample is kept when there are more) and
            ``popularity_window_days``.
        users: query state of users at the start of the eval window (``USER_STATE_COLUMNS``). When None,
            each eval user's state is taken from their earliest eval example, whose history and counters
            are as of just before that event, i.e. as of the window start.

    Returns:
        The hold-out; users without any countable ground truth are left out.

    Raises:
        ValueError: missing columns, duplicate catalog ids, no eval rows or no countable eval user.
    """
    examples = as_table(examples, "examples")
    catalog = as_table(catalog, "catalog")
    require_columns(examples, EXAMPLE_KEY_COLUMNS, "examples")
    require_columns(catalog, ("item_id",), "catalog")
    item_ids = np.asarray(catalog.column("item_id").to_pylist(), dtype=object)
    if pc.count(catalog.column("item_id"), mode="only_null").as_py():
        raise ValueError("catalog has rows with a null item_id")
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("catalog item_id values must be unique")
    item_index = pd.Index(item_ids)

    key = examples.select(list(EXAMPLE_KEY_COLUMNS)).to_pandas()
    bad_split = ~key["split"].isin(["train", "eval"])
    if bad_split.any():
        row = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise ValueError(
            f"examples row {row}: split must be 'train' or 'eval', got {key['split'].iloc[row]!r}"
        )
    is_eval = (key["split"] == "eval").to_numpy()
    if not is_eval.any():
        raise ValueError("examples have no rows with split == 'eval'; cannot build a hold-out")
    eval_start = _window_start(examples, is_eval)

    train = key.loc[~is_eval]
    window_start = pd.Timestamp(eval_start - dt.timedelta(days=config.popularity_window_days))
    recent = train.loc[train["event_ts"] >= window_start, "item_id"]
    popularity = np.bincount(_positions(item_index, recent), minlength=len(item_ids) + 1)[:-1].astype(float)

    if users is None:
        users_tbl = _state_from_first_eval_example(examples, is_eval)
    else:
        users_tbl = as_table(users, "users")
        require_columns(users_tbl, USER_STATE_COLUMNS, "users")
        users_tbl = users_tbl.select(list(USER_STATE_COLUMNS))
    eval_rows = key.loc[is_eval]
    eval_user_ids = pd.Index(sorted(set(eval_rows["user_id"]) & set(users_tbl.column("user_id").to_pylist())))

    # Seen = engaged with before the window: training rows plus the history carried by the query state.
    seen_pairs = [
        (_positions(eval_user_ids, train["user_id"]), _positions(item_index, train["item_id"])),
    ]
    state_user = users_tbl.column("user_id").to_pylist()
    state_rows = _positions(eval_user_ids, pd.Series(state_user))
    hist_lengths = pc.list_value_length(users_tbl.column("history")).fill_null(0).to_numpy()
    hist_items = pc.list_flatten(users_tbl.column("history")).to_pandas()
    seen_pairs.append((np.repeat(state_rows, hist_lengths), _positions(item_index, hist_items)))
    seen = _pairs_to_matrix(seen_pairs, len(eval_user_ids), len(item_ids))

    truth_all = _pairs_to_matrix(
        [(_positions(eval_user_ids, eval_rows["user_id"]), _positions(item_index, eval_rows["item_id"]))],
        len(eval_user_ids),
        len(item_ids),
    )
    truth = (truth_all - truth_all.multiply(seen)).tocsr()
    truth.eliminate_zeros()
    dropped = int(len(eval_rows.drop_duplicates(["user_id", "item_id"])) - truth.nnz)

    keep = np.flatnonzero(np.diff(truth.indptr) > 0)
    if len(keep) == 0:
        raise ValueError("no eval user has an eval-window engagement with an unseen catalog post")
    if len(keep) > config.max_eval_users:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(keep, size=config.max_eval_users, replace=False))
    kept_ids = eval_user_ids[keep]

    # One state row per kept user, in the order of `keep`.
    first_state = pd.Series(np.arange(len(state_user))).groupby(np.asarray(state_user, dtype=object)).first()
    users_out = users_tbl.take(pa.array(first_state.loc[kept_ids].to_numpy()))

    train_users = pd.Index(sorted(set(train["user_id"])))
    train_matrix = _pairs_to_matrix(
        [(_positions(train_users, train["user_id"]), _positions(item_index, train["item_id"]))],
        len(train_users),
        len(item_ids),
    )
    holdout = Holdout(
        eval_start=eval_start,
        users=users_out,
        catalog=catalog,
        item_ids=item_ids,
        truth=truth[keep],
        seen=seen[keep],
        train_matrix=train_matrix,
        popularity=popularity,
        dropped_truth=dropped,
    )
    log.info("hold-out: %s", holdout.summary())
    return holdout


def _window_start(examples: pa.Table, is_eval: np.ndarray) -> dt.datetime:
    if "ds" in examples.column_names:
        first_ds = min(d for d, e in zip(examples.column("ds").to_pylist(), is_eval, strict=True) if e)
        return dt.datetime.combine(first_ds, dt.time(), tzinfo=dt.UTC)
    ts = examples.column("event_ts").filter(pa.array(is_eval))
    first = pc.min(ts).as_py()
    return dt.datetime.combine(first.date(), dt.time(), tzinfo=dt.UTC)


def _state_from_first_eval_example(examples: pa.Table, is_eval: np.ndarray) -> pa.Table:
    require_columns(examples, USER_STATE_COLUMNS, "examples")
    eval_tbl = examples.filter(pa.array(is_eval)).select([*USER_STATE_COLUMNS, "event_ts"])
    eval_tbl = eval_tbl.sort_by([("user_id", "ascending"), ("event_ts", "ascending")])
    user_ids = eval_tbl.column("user_id").to_numpy(zero_copy_only=False)
    first = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    return eval_tbl.take(pa.array(first)).select(list(USER_STATE_COLUMNS))


def _positions(index: pd.Index, values: pd.Series | list[str]) -> np.ndarray:
    """Positions of ``values`` in ``index``; values not in it map to ``len(index)`` (an overflow slot)."""
    pos = index.get_indexer(pd.Series(values, dtype=object))
    pos[pos < 0] = len(index)
    return pos


def _pairs_to_matrix(pairs: list[tuple[np.ndarray, np.ndarray]], n_rows: int, n_cols: int) -> sp.csr_matrix:
    rows = np.concatenate([r for r, _ in pairs])
    cols = np.concatenate([c for _, c in pairs])
    inside = (rows < n_rows) & (cols < n_cols)
    matrix = sp.csr_matrix(
        (np.ones(int(inside.sum()), dtype=np.float32), (rows[inside], cols[inside])), shape=(n_rows, n_cols)
    )
    matrix.data[:] = 1.0  # duplicates were summed; the matrix is binary
    return matrix


# -- scorers -------------------------------------------------------------------------------------------
def popularity_scorer(holdout: Holdout) -> Scorer:
    """Most-popular baseline: the same recent-popularity ranking for everyone."""
    scores = holdout.popularity.astype(np.float64)

    def score(rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(scores, (len(rows), len(scores))).copy()

    return score


def item_knn_scorer(holdout: Holdout, neighbors: int) -> Scorer:
    """Item-kNN baseline on the training user-item matrix.

    ``sim[i, j] = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` (cosine of binary item columns), keeping each item's
    ``neighbors`` most similar items; a user scores item ``j`` as ``sum_i seen[u, i] * sim[i, j]``. A
    popularity term scaled far below the smallest similarity breaks ties, so users with no training
    engagements get the most-popular list.
    """
    x = holdout.train_matrix.tocsc().astype(np.float64)
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    co = (x.T @ x).tocsr()
    sim = sp.diags(inv) @ co @ sp.diags(inv)
    sim = sim.tolil()
    sim.setdiag(0.0)
    sim = _keep_top_per_row(sim.tocsr(), neighbors)
    pop = holdout.popularity / max(holdout.popularity.max(), 1.0)
    smallest = sim.data[sim.data > 0].min() if sim.nnz else 1.0
    tie_break = pop * smallest * 1e-3

    def score(rows: np.ndarray) -> np.ndarray:
        return np.asarray((holdout.seen[rows] @ sim).todense()) + tie_break

    return score


def _keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    matrix = matrix.copy()
    matrix.eliminate_zeros()
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if end - start > k:
            row = matrix.data[start:end]
            cut = np.argpartition(-row, k - 1)[k:]
            row[cut] = 0.0
    matrix.eliminate_zeros()
    return matrix


def embedding_scorer(user_embeddings: np.ndarray, item_embeddings: np.ndarray) -> Scorer:
    """Dot-product scorer for a two-tower model's user and catalog embeddings.

    Raises:
        ValueError: the embedding dimensions differ.
    """
    if user_embeddings.shape[1] != item_embeddings.shape[1]:
        raise ValueError(
            f"user embeddings have dim {user_embeddings.shape[1]}, item embeddings {item_embeddings.shape[1]}"
        )

    def score(rows: np.ndarray) -> np.ndarray:
        return user_embeddings[rows] @ item_embeddings.T

    return score


def baseline_scorers(holdout: Holdout, config: EvaluationConfig) -> dict[str, Scorer]:
    return {
        "most_popular": popularity_scorer(holdout),
        "item_knn": item_knn_scorer(holdout, config.knn_neighbors),
    }


# -- evaluation ----------------------------------------------------------------------------------------
def evaluate_scorer(
    scorer: Scorer, holdout: Holdout, ks: list[int], batch_users: int = 512
) -> dict[str, float]:
    """Recall@K, NDCG@K and coverage@K of one scorer on the hold-out.

    Args:
        scorer: maps hold-out user rows to scores over ``holdout.item_ids``.
        holdout: from :func:`build_holdout`.
        ks: cut-offs.
        batch_users: users scored at once (bounds memory to ``batch_users * n_items`` floats).

    Returns:
        ``{"recall_at_10": ..., "ndcg_at_10": ..., "coverage_at_10": ..., ..., "n_users": ...}``.

    Raises:
        ValueError: the scorer returned a matrix of the wrong shape or with NaNs.
    """
    max_k = min(max(ks), holdout.n_items)
    recall = {k: [] for k in ks}
    ndcg = {k: [] for k in ks}
    tops = []
    for start in range(0, holdout.n_users, batch_users):
        rows = np.arange(start, min(start + batch_users, holdout.n_users))
        scores = np.array(scorer(rows), dtype=np.float64)
        if scores.shape != (len(rows), holdout.n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(rows), holdout.n_items)}")
        if np.isnan(scores).any():
            raise ValueError(f"scorer returned NaN scores for hold-out users {rows[0]}..{rows[-1]}")
        seen = holdout.seen[rows]
        scores[seen.nonzero()] = -np.inf
        top = top_k_indices(scores, max_k)
        truth = holdout.truth[rows].toarray() > 0
        hits = np.take_along_axis(truth, top, axis=1)
        n_relevant = truth.sum(axis=1)
        for k in ks:
            recall[k].append(recall_at_k(hits, n_relevant, k))
            ndcg[k].append(ndcg_at_k(hits, n_relevant, k))
        tops.append(top)
    top_all = np.concatenate(tops)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall_at_{k}"] = float(np.concatenate(recall[k]).mean())
        out[f"ndcg_at_{k}"] = float(np.concatenate(ndcg[k]).mean())
        out[f"coverage_at_{k}"] = catalog_coverage_at_k(top_all, k, holdout.n_items)
    out["n_users"] = float(holdout.n_users)
    return out


def evaluate_models(
    scorers: dict[str, Scorer], holdout: Holdout, config: EvaluationConfig
) -> dict[str, dict[str, float]]:
    """Evaluate several scorers on the same hold-out and log one line per model.

    Returns:
        ``{model_name: metrics}`` in the order given.
    """
    results: dict[str, dict[str, float]] = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        results[name] = evaluate_scorer(scorer, holdout, config.ks)
        log.info(
            "%s: %s (%.1f s)",
            name,
            ", ".join(f"{k}={v:.4f}" for k, v in results[name].items() if k != "n_users"),
            time.perf_counter() - started,
        )
    return results
