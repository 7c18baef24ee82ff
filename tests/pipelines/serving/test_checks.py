"""The filters and the list checks on a hand-made catalog: seen, blocked, foreign and too old posts are
out; each broken rule names its user; a list is a run of rows of one user id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.schema import CANDIDATES
from pipelines.serving.batch import UserBatch
from pipelines.serving.checks import ListInvariantError, check_lists
from pipelines.serving.context import ServingContext, build_context, no_vectors
from pipelines.serving.filters import allowed
from pipelines.serving.system import ServedSystem

# p0 en, p1 de, p2 fr, p3 en but 9 days old, p4 en from source "s-blocked", p5 en tagged "t-blocked".
ITEMS = pa.table(
    {
        "item_id": [f"p{i}" for i in range(6)],
        "language": ["en", "de", "fr", "en", "en", "en"],
        "source": ["s", "s", "s", "s", "s-blocked", "s"],
        "author": [f"a{i}" for i in range(6)],
        "tags": pa.array([["t"], [], None, ["t"], ["t"], ["t", "t-blocked"]], pa.list_(pa.string())),
        "engagements_short": [5, 4, 3, 2, 1, 0],
        "impressions_short": [10] * 6,
        "item_age_days": [1.0, 1.0, 1.0, 9.0, 1.0, 1.0],
    }
)
# u0 reads German and has seen p0; u1 blocks source "s-blocked" and tag "t-blocked"; u2 has no language.
USERS = pa.table(
    {
        "user_id": ["u0", "u1", "u2"],
        "language": ["de", "fr", None],
        "blocked_sources": pa.array([[], ["s-blocked"], None], pa.list_(pa.string())),
        "blocked_tags": pa.array([[], ["t-blocked"], []], pa.list_(pa.string())),
        "selected_tags": pa.array([[], [], []], pa.list_(pa.string())),
    }
)
SEEN = pa.table({"user_id": ["u0", "u2", "u9"], "item_id": ["p0", "p9", "p1"]})


@pytest.fixture()
def ctx() -> ServingContext:
    system = ServedSystem("most_popular", None, diversify=False, max_item_age_days=7.0)
    return build_context(ITEMS, no_vectors(ITEMS.num_rows), None, None, system)


def test_allowed_leaves_out_seen_foreign_blocked_and_old_posts(ctx: ServingContext) -> None:
    batch = UserBatch.build(USERS, SEEN, ctx)
    positions = np.tile(np.arange(-1, 6), (3, 1))  # -1 is padding
    got = allowed(ctx, batch, np.arange(3), positions)
    assert got.tolist() == [
        # pad   p0     p1     p2     p3     p4     p5
        [False, False, True, False, False, True, True],  # u0: p0 seen, p2 French, p3 too old
        [False, True, False, True, False, False, False],  # u1: p1 German, p4 and p5 blocked
        [False, True, False, False, False, True, True],  # u2: English only
    ]
    # The same pairs one user row at a time, in another order, give the same answers.
    for user in (2, 0, 1):
        assert (allowed(ctx, batch, np.array([user]), positions[:1]) == got[user]).all()


def _lists(rows: list[tuple[str, str, float]]) -> pa.Table:
    users, items, scores = zip(*rows, strict=True) if rows else ((), (), ())
    n = len(rows)
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "rank": pa.array(np.arange(1, n + 1), pa.int32()),
            "item_id": pa.array(items, pa.string()),
            "score": pa.array(scores, pa.float32()),
            "retrieval_score": pa.array([None] * n, pa.float32()),
            "reason": pa.array(["ranked"] * n, pa.string()),
        },
        schema=CANDIDATES,
    )


GOOD = [("u0", "p1", 3.0), ("u0", "p4", 2.0), ("u1", "p0", 5.0), ("u1", "p2", 5.0), ("u2", "p5", 1.0)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([*GOOD[:2], ("u1", "p0", 5.0), ("u1", "p2", 4.0), ("u1", "p3", 3.0)], "user u1: post p3 is seen"),
        (
            [*GOOD[:2], ("u1", "p0", 5.0), ("u1", "p2", 4.0), ("u1", "p0", 3.0)],
            "user u1: a post appears twice",
        ),
        ([*GOOD[:2], ("u1", "p0", 5.0), ("u1", "p2", 6.0)], "user u1: scores increase down the list"),
        (
            [*GOOD, ("u2", "p0", 0.5), ("u2", "p4", 0.25), ("u2", "p1", 0.1)],
            "user u2: 4 posts, more than top_k=3",
        ),
        ([("u0", "p1", 3.0), ("u0", "p0", 2.0), *GOOD[2:]], "user u0: post p0 is seen"),
        ([*GOOD[:1], ("u0", "p7", 1.0)], r"posts not in the catalog: \['p7'\]"),
    ],
)
def test_each_broken_rule_names_the_first_list_that_breaks_it(ctx, rows, message) -> None:
    batch = UserBatch.build(USERS, SEEN, ctx)
    check_lists(_lists(GOOD), ctx, batch, k=3)
    check_lists(_lists([]), ctx, batch, k=3)
    with pytest.raises(ListInvariantError, match=message):
        check_lists(_lists(rows), ctx, batch, k=3)


def test_a_list_is_a_run_of_one_user_and_an_unknown_user_is_a_key_error(ctx: ServingContext) -> None:
    batch = UserBatch.build(USERS, SEEN, ctx)
    # u0's posts in two runs are two lists: p1 twice is no duplicate within a list, and the score may
    # rise from one run to the next.
    check_lists(_lists([("u0", "p1", 1.0), ("u1", "p0", 5.0), ("u0", "p1", 2.0)]), ctx, batch, k=1)
    with pytest.raises(KeyError, match="u7"):
        check_lists(_lists([("u0", "p1", 1.0), ("u7", "p0", 5.0), ("u7", "p2", 4.0)]), ctx, batch, k=2)
