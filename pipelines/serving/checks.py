"""The invariants of every candidate list, checked before a shard file is written: at most ``top_k`` posts,
no duplicates, only catalog posts, nothing seen or blocked, scores that never increase down the list."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.tables import row_numbers
from pipelines.serving.batch import UserBatch
from pipelines.serving.context import ServingContext
from pipelines.serving.filters import allowed


class ListInvariantError(RuntimeError):
    """A candidate list broke an invariant; the message names the user and the rule."""


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
    if candidates.num_rows == 0:
        return
    # A list is a run of one user id: each run's id is looked up once, not each row's.
    ids = candidates.column("user_id")
    changes = pc.fill_null(pc.not_equal(ids[1:], ids[:-1]), True).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(changes) + 1])
    sizes = np.diff(np.append(starts, candidates.num_rows))
    rows = np.repeat(row_numbers(ids.take(pa.array(starts)), batch.users.column("user_id")), sizes)
    if (rows < 0).any():
        raise KeyError(ids[int(np.flatnonzero(rows < 0)[0])].as_py())
    scores = candidates.column("score").to_numpy()
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
