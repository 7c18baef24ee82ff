"""List scoring on a hand-computed case: Recall@K, NDCG@K, coverage and fresh share."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from pipelines.evaluation.scoring import combine, score_lists

LISTS = pa.table(
    {
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u3"],
        "rank": [1, 2, 3, 1, 2, 1],
        "item_id": ["x", "a", "b", "c", "d", "a"],
    }
)
# u4 engaged with e but got no list; u3 got a list but is not evaluated (nothing relevant).
TRUTH = pa.table({"user_id": ["u1", "u1", "u2", "u4", "u1"], "item_id": ["a", "b", "c", "e", "a"]})
USERS = pa.array(["u1", "u2", "u4"])


@pytest.fixture(scope="module")
def scores():
    return score_lists(LISTS, TRUTH, USERS, [1, 2], catalog_size=10, fresh_items=pa.array(["a", "d"]))


def test_recall_counts_relevant_posts_by_rank(scores) -> None:
    # u1: a at rank 2 of {a, b} -> 0 at K=1, 1/2 at K=2; u2: c at rank 1 of {c}; u4: no list -> 0.
    assert scores.per_user["recall_at_1"].tolist() == [0.0, 1.0, 0.0]
    assert scores.per_user["recall_at_2"].tolist() == [0.5, 1.0, 0.0]


def test_ndcg_uses_binary_gains_and_the_ideal_of_min_relevant_k(scores) -> None:
    # u1 at K=2: DCG = 1/log2(3); ideal (two relevant) = 1 + 1/log2(3).
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert scores.per_user["ndcg_at_1"].tolist() == [0.0, 1.0, 0.0]
    assert scores.per_user["ndcg_at_2"] == pytest.approx([expected, 1.0, 0.0])


def test_coverage_and_fresh_share_read_the_evaluated_users_top_k(scores) -> None:
    # Top-1 slots of evaluated users: x, c -> 2 of 10 posts, none fresh; top-2: x, a, c, d -> 4, half fresh.
    assert scores.coverage == {"coverage_at_1": 0.2, "coverage_at_2": 0.4}
    assert scores.fresh_share == {"fresh_share_at_1": 0.0, "fresh_share_at_2": 0.5}
    assert scores.means()["recall_at_2"] == pytest.approx(0.5)


def test_an_evaluated_user_without_relevant_posts_is_refused() -> None:
    with pytest.raises(ValueError, match="'u3' has no relevant post"):
        score_lists(LISTS, TRUTH, pa.array(["u1", "u3"]), [1], catalog_size=10)


def test_paired_difference_needs_the_same_users(scores) -> None:
    other = score_lists(LISTS, TRUTH, pa.array(["u1", "u2"]), [1, 2], catalog_size=10)
    with pytest.raises(ValueError, match="same users"):
        scores.difference(other)
    same = scores.difference(scores)
    assert same["recall_at_2"].mean == 0.0 and same["recall_at_2"].low == 0.0


def test_nights_combine_user_night_pairs(scores) -> None:
    both = combine([scores, scores])
    assert both.n_users == 6 and np.array_equal(both.per_user["recall_at_1"], [0, 1, 0, 0, 1, 0])
    assert both.coverage == scores.coverage
