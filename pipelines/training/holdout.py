"""The temporal hold-out every retrieval model is scored on, mirroring what the nightly job does.

For each eval user, the query is the user's state at the start of the eval window, the ground truth is the
set of posts the user engaged with inside the window, and the ranking runs over the FULL catalog with the
posts the user had already engaged with before the window removed (they would be filtered out of a digest
anyway). Reads training examples (the ``split`` column says train or eval) and the catalog, as Arrow
tables; writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipelines.core.settings import EvaluationConfig
from pipelines.core.tables import as_table, require_columns

log = logging.getLogger(__name__)

EXAMPLE_KEY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_ts", "split")


@dataclass(frozen=True)
class Holdout:
    """The eval users, their ground truth and what they had seen, indexed against one catalog.

    Attributes:
        eval_start: first instant of the eval window (midnight UTC of the earliest eval ``ds``).
        users: query state of each eval user at ``eval_start`` (the ``user_columns`` of
            :func:`build_holdout`); row ``u`` of every matrix below belongs to row ``u`` of this table.
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


def build_holdout(
    examples: pa.Table | pd.DataFrame,
    catalog: pa.Table | pd.DataFrame,
    config: EvaluationConfig,
    user_columns: Sequence[str],
    users: pa.Table | pd.DataFrame | None = None,
) -> Holdout:
    """Index the eval window of ``examples`` against ``catalog``.

    Args:
        examples: training examples with at least ``user_id, item_id, event_ts, split`` (and the user
            state columns when ``users`` is not given).
        catalog: the posts to rank (``item_id`` unique, plus item features for model scorers).
        config: ``max_eval_users`` (a seeded sample is kept when there are more) and
            ``popularity_window_days``.
        user_columns: the query-state columns the scorers read (the user tower's input columns, with
            ``user_id`` and ``history``).
        users: query state of users at the start of the eval window (``user_columns``). When None,
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
        users_tbl = _state_from_first_eval_example(examples, is_eval, user_columns)
    else:
        users_tbl = as_table(users, "users")
        require_columns(users_tbl, user_columns, "users")
        users_tbl = users_tbl.select(list(user_columns))
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


def _state_from_first_eval_example(
    examples: pa.Table, is_eval: np.ndarray, user_columns: Sequence[str]
) -> pa.Table:
    require_columns(examples, user_columns, "examples")
    eval_tbl = examples.filter(pa.array(is_eval)).select([*user_columns, "event_ts"])
    eval_tbl = eval_tbl.sort_by([("user_id", "ascending"), ("event_ts", "ascending")])
    user_ids = eval_tbl.column("user_id").to_numpy(zero_copy_only=False)
    first = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    return eval_tbl.take(pa.array(first)).select(list(user_columns))


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
