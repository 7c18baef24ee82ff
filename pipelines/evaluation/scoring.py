"""Score published (or replayed) candidate lists against what users did next.

A list is scored the way a user meets it: by rank. For each evaluated user, the relevant posts are the
ones the user engaged with in the window after the night and had not seen before it; Recall@K and NDCG@K
(binary gains) read the user's list down to K. A user with relevant posts and no list scores 0. Coverage
and the share of fresh posts describe the top-K slots of all evaluated users together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.tables import require_columns, row_numbers
from pipelines.evaluation.bootstrap import Interval, bootstrap_mean, paired_difference

LIST_COLUMNS: tuple[str, ...] = ("user_id", "rank", "item_id")
TRUTH_COLUMNS: tuple[str, ...] = ("user_id", "item_id")


@dataclass(frozen=True)
class ListScores:
    """Per-user scores of one system's lists on one set of evaluated users.

    Attributes:
        user_ids: the evaluated users, in the order of every per-user array.
        per_user: ``recall_at_K`` and ``ndcg_at_K`` arrays, one value per user.
        coverage: ``coverage_at_K``: distinct posts in the top-K slots over the catalog size.
        fresh_share: ``fresh_share_at_K``: share of the filled top-K slots that hold a fresh post.
    """

    user_ids: np.ndarray
    per_user: dict[str, np.ndarray]
    coverage: dict[str, float]
    fresh_share: dict[str, float]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def means(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_user.items()}

    def intervals(self, seed: int = 0) -> dict[str, Interval]:
        """A percentile-bootstrap interval of every per-user metric."""
        return {name: bootstrap_mean(values, seed=seed) for name, values in self.per_user.items()}

    def difference(self, other: ListScores, seed: int = 0) -> dict[str, Interval]:
        """This system minus ``other`` on the same users, per metric, with paired bootstrap intervals.

        Raises:
            ValueError: the two were scored on different users.
        """
        if not np.array_equal(self.user_ids, other.user_ids):
            raise ValueError("paired differences need both systems scored on the same users")
        return {
            name: paired_difference(values, other.per_user[name], seed=seed)
            for name, values in self.per_user.items()
        }

    def summary(self) -> dict[str, float]:
        """Means, coverage and fresh share in one flat, JSON-ready mapping."""
        return {**self.means(), **self.coverage, **self.fresh_share, "n_users": float(self.n_users)}


def combine(parts: Iterable[ListScores]) -> ListScores:
    """Scores of several nights as one: the (user, night) pairs side by side, coverage and fresh share
    averaged over the nights (each is a property of one night's lists)."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to combine")
    names = parts[0].per_user.keys()
    return ListScores(
        user_ids=np.concatenate([p.user_ids for p in parts]),
        per_user={n: np.concatenate([p.per_user[n] for p in parts]) for n in names},
        coverage={n: float(np.mean([p.coverage[n] for p in parts])) for n in parts[0].coverage},
        fresh_share={n: float(np.mean([p.fresh_share[n] for p in parts])) for n in parts[0].fresh_share},
    )


def score_lists(
    lists: pa.Table,
    truth: pa.Table,
    users: pa.Array | pa.ChunkedArray,
    ks: Iterable[int],
    catalog_size: int,
    fresh_items: pa.Array | None = None,
) -> ListScores:
    """Recall@K and NDCG@K per evaluated user, coverage@K and fresh share@K of ``lists``.

    Args:
        lists: ``user_id, rank, item_id`` (rank 1 = first); other columns are ignored.
        truth: ``user_id, item_id`` pairs: what each user engaged with after the night and had not
            seen before it (duplicates count once).
        users: the evaluated users (distinct); each must have at least one pair in ``truth``.
        ks: the cut-offs.
        catalog_size: posts that could have been listed, for coverage.
        fresh_items: the posts that count as fresh for the fresh share (None: no fresh share).

    Returns:
        The scores, users in the order given.

    Raises:
        ValueError: a missing column, a cut-off below 1, or an evaluated user without relevant posts.
    """
    require_columns(lists, LIST_COLUMNS, "lists")
    require_columns(truth, TRUTH_COLUMNS, "truth")
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive, got {ks}")
    users = users.combine_chunks() if isinstance(users, pa.ChunkedArray) else users
    truth = truth.select(list(TRUTH_COLUMNS)).group_by(list(TRUTH_COLUMNS)).aggregate([])
    truth_user = row_numbers(truth.column("user_id"), users, unique=True)
    truth = truth.filter(pa.array(truth_user >= 0))
    truth_user = truth_user[truth_user >= 0]
    n_relevant = np.bincount(truth_user, minlength=len(users))
    if len(users) and n_relevant.min() == 0:
        lonely = users[int(np.argmin(n_relevant))].as_py()
        raise ValueError(f"evaluated user {lonely!r} has no relevant post in the truth")

    top = lists.filter(pc.less_equal(lists.column("rank"), max(ks)))
    list_user = row_numbers(top.column("user_id"), users, unique=True)
    top = top.filter(pa.array(list_user >= 0))
    list_user = list_user[list_user >= 0]
    rank = top.column("rank").to_numpy().astype(np.int64)
    # A listed (user, post) pair is a hit when the same pair is in the truth.
    pair = pc.binary_join_element_wise(top.column("user_id"), top.column("item_id"), "\x1f")
    truth_pair = pc.binary_join_element_wise(truth.column("user_id"), truth.column("item_id"), "\x1f")
    hit = pc.is_in(pair, value_set=truth_pair).to_numpy(zero_copy_only=False)

    per_user: dict[str, np.ndarray] = {}
    coverage: dict[str, float] = {}
    fresh_share: dict[str, float] = {}
    fresh = (
        pc.is_in(top.column("item_id"), value_set=fresh_items).to_numpy(zero_copy_only=False)
        if fresh_items is not None
        else None
    )
    for k in ks:
        within = rank <= k
        hits_k = hit & within
        found = np.bincount(list_user[hits_k], minlength=len(users))
        gain = np.bincount(list_user[hits_k], weights=1.0 / np.log2(rank[hits_k] + 1), minlength=len(users))
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(n_relevant, k) - 1]
        per_user[f"recall_at_{k}"] = found / np.maximum(n_relevant, 1)
        per_user[f"ndcg_at_{k}"] = gain / ideal
        listed = pc.unique(top.column("item_id").filter(pa.array(within))) if within.any() else []
        coverage[f"coverage_at_{k}"] = len(listed) / catalog_size if catalog_size else 0.0
        if fresh is not None:
            fresh_share[f"fresh_share_at_{k}"] = float(fresh[within].mean()) if within.any() else 0.0
    return ListScores(np.asarray(users.to_pylist(), dtype=object), per_user, coverage, fresh_share)
