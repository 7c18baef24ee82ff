"""Retrieval metrics, the hold-out and the baselines, on fixtures small enough to check by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.settings import EvaluationConfig
from pipelines.training import evaluation

STRINGS = pa.list_(pa.string())


# -- metric functions --------------------------------------------------------------------------------------
def test_top_k_orders_by_score_and_breaks_ties_by_lower_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 2.0], [0.0, -np.inf, 5.0, 5.0, 1.0]])
    # row 0: 3.0 at columns 1 and 2 (tie -> 1 first), then 2.0 at 4
    # row 1: 5.0 at columns 2 and 3, then 1.0 at 4
    assert evaluation.top_k_indices(scores, 3).tolist() == [[1, 2, 4], [2, 3, 4]]
    # k larger than the catalog returns the whole catalog, -inf last
    assert evaluation.top_k_indices(scores, 9)[1].tolist() == [2, 3, 4, 0, 1]


def test_top_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2-D"):
        evaluation.top_k_indices(np.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        evaluation.top_k_indices(np.zeros((1, 3)), 0)


def test_recall_ndcg_and_coverage_by_hand():
    # user 0: relevant items at ranks 0 and 2, 2 relevant in total
    # user 1: relevant item at rank 1, 3 relevant in total (two never retrieved)
    hits = np.array([[True, False, True], [False, True, False]])
    n_relevant = np.array([2, 3])
    # recall@1 = [1/2, 0/3]; recall@3 = [2/2, 1/3]
    np.testing.assert_allclose(evaluation.recall_at_k(hits, n_relevant, 1), [0.5, 0.0])
    np.testing.assert_allclose(evaluation.recall_at_k(hits, n_relevant, 3), [1.0, 1 / 3])
    # ndcg@3 user 0: dcg = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5; idcg (2 relevant) = 1 + 1/log2(3) = 1.6309
    # ndcg@3 user 1: dcg = 1/log2(3) = 0.6309; idcg (min(3, 3) = 3) = 1 + 0.6309 + 0.5 = 2.1309
    np.testing.assert_allclose(
        evaluation.ndcg_at_k(hits, n_relevant, 3), [1.5 / 1.6309298, 0.6309298 / 2.1309298], rtol=1e-6
    )
    top = np.array([[4, 1, 2], [4, 3, 0]])
    # @1: {4} of 10 items; @3: {0, 1, 2, 3, 4} of 10
    assert evaluation.catalog_coverage_at_k(top, 1, 10) == 0.1
    assert evaluation.catalog_coverage_at_k(top, 3, 10) == 0.5


# -- hold-out and baselines ---------------------------------------------------------------------------------
DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _example(user: str, item: str, day: int, split: str, history: list[str]) -> dict:
    ts = DAY0 + dt.timedelta(days=day, hours=12)
    return {
        "user_id": user,
        "item_id": item,
        "event_ts": ts,
        "ds": ts.date(),
        "split": split,
        "history": history,
        "selected_tags": [],
        "account_age_days": 100.0,
        "activity_lookback": len(history),
    }


def tiny_examples() -> pa.Table:
    # catalog a..e; eval window starts on day 8
    rows = [
        _example("u1", "a", 1, "train", []),
        _example("u1", "b", 5, "train", ["a"]),
        _example("u2", "a", 5, "train", []),
        _example("u2", "c", 6, "train", ["a"]),
        _example("u3", "b", 6, "train", []),
        _example("u1", "c", 8, "eval", ["b", "a"]),
        _example("u1", "d", 9, "eval", ["c", "b", "a"]),
        _example("u2", "a", 8, "eval", ["c", "a"]),  # already seen: does not count
        _example("u2", "e", 9, "eval", ["a", "c", "a"]),
        _example("u3", "z", 8, "eval", ["b"]),  # not in the catalog: does not count
    ]
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_ts", pa.timestamp("us", tz="UTC")),
            ("ds", pa.date32()),
            ("split", pa.string()),
            ("history", STRINGS),
            ("selected_tags", STRINGS),
            ("account_age_days", pa.float64()),
            ("activity_lookback", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


CATALOG = pa.table({"item_id": ["a", "b", "c", "d", "e"]})
CONFIG = EvaluationConfig(ks=[1, 2, 3], popularity_window_days=3, max_eval_users=10, knn_neighbors=10)


def test_holdout_truth_seen_and_popularity():
    holdout = evaluation.build_holdout(tiny_examples(), CATALOG, CONFIG)
    assert holdout.eval_start == DAY0 + dt.timedelta(days=8)  # midnight of the first eval ds
    # u3's only eval engagement is outside the catalog, so u3 has no ground truth and is left out
    assert holdout.users.column("user_id").to_pylist() == ["u1", "u2"]
    assert holdout.truth.toarray().tolist() == [[0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    assert holdout.seen.toarray().tolist() == [[1, 1, 0, 0, 0], [1, 0, 1, 0, 0]]
    # 5 distinct eval (user, item) pairs, 3 count: u2-a was seen, u3-z is not in the catalog
    assert holdout.dropped_truth == 2
    # window = days 5..7: a once (u2), b twice (u1, u3), c once (u2); a on day 1 is too old
    assert holdout.popularity.tolist() == [1, 2, 1, 0, 0]
    # the query state is the first eval example's: u1 had engaged with b then a
    assert holdout.users.column("history").to_pylist()[0] == ["b", "a"]


def test_most_popular_metrics_by_hand():
    holdout = evaluation.build_holdout(tiny_examples(), CATALOG, CONFIG)
    metrics = evaluation.evaluate_scorer(evaluation.popularity_scorer(holdout), holdout, CONFIG.ks)
    # u1: a, b seen; popularity c=1, d=0, e=0 -> ranking c, d, e; truth {c, d} -> hits at ranks 0, 1
    # u2: a, c seen; popularity b=2, d=0, e=0 -> ranking b, d, e; truth {e} -> hit at rank 2
    # recall@1 = (1/2 + 0) / 2; recall@2 = (2/2 + 0) / 2; recall@3 = (1 + 1) / 2
    assert metrics["recall_at_1"] == pytest.approx(0.25)
    assert metrics["recall_at_2"] == pytest.approx(0.5)
    assert metrics["recall_at_3"] == pytest.approx(1.0)
    # ndcg@3: u1 perfect (1.0); u2 dcg = 1/log2(4) = 0.5, idcg = 1 -> 0.5; mean 0.75
    assert metrics["ndcg_at_3"] == pytest.approx(0.75)
    # coverage@1: {c, b} of 5; @2: {c, d, b} of 5
    assert metrics["coverage_at_1"] == pytest.approx(0.4)
    assert metrics["coverage_at_2"] == pytest.approx(0.6)
    assert metrics["n_users"] == 2


def test_item_knn_scores_by_hand():
    holdout = evaluation.build_holdout(tiny_examples(), CATALOG, CONFIG)
    # training matrix: u1 {a, b}, u2 {a, c}, u3 {b}; item users: a {u1, u2}, b {u1, u3}, c {u2}
    # cos(a, b) = 1 / sqrt(2 * 2) = 0.5; cos(a, c) = 1 / sqrt(2 * 1) = 0.7071; cos(b, c) = 0
    # u1 saw {a, b}: a = cos(b, a) = 0.5, b = cos(a, b) = 0.5, c = cos(a, c) + cos(b, c) = 0.7071
    # u2 saw {a, c}: a = cos(c, a) = 0.7071, b = cos(a, b) = 0.5, c = cos(a, c) = 0.7071
    # plus a popularity tie-break below 1e-3 of the smallest similarity
    scores = evaluation.item_knn_scorer(holdout, neighbors=10)(np.array([0, 1]))
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.7071, 0, 0], [0.7071, 0.5, 0.7071, 0, 0]], atol=1e-3)
    # keeping one neighbour per item: a -> c (0.7071), b -> a (0.5), c -> a (0.7071)
    # u1 {a, b}: a = 0.5 (from b), b = 0 (a's neighbour is c), c = 0.7071
    pruned = evaluation.item_knn_scorer(holdout, neighbors=1)(np.array([0]))
    np.testing.assert_allclose(pruned, [[0.5, 0.0, 0.7071, 0, 0]], atol=1e-3)


def test_explicit_user_state_and_sampling_of_eval_users():
    users = pa.Table.from_pylist(
        [
            {
                "user_id": "u2",
                "history": ["c", "a"],
                "selected_tags": [],
                "account_age_days": 1.0,
                "activity_lookback": 2,
            },
            {
                "user_id": "u1",
                "history": ["b"],
                "selected_tags": ["x"],
                "account_age_days": 2.0,
                "activity_lookback": 2,
            },
        ],
        schema=pa.schema(
            [
                ("user_id", pa.string()),
                ("history", STRINGS),
                ("selected_tags", STRINGS),
                ("account_age_days", pa.float64()),
                ("activity_lookback", pa.int64()),
            ]
        ),
    )
    holdout = evaluation.build_holdout(tiny_examples(), CATALOG, CONFIG, users=users)
    # rows follow sorted user ids, each with its given state
    assert holdout.users.column("selected_tags").to_pylist() == [["x"], []]


def test_perfect_scorer_gets_full_recall():
    holdout = evaluation.build_holdout(tiny_examples(), CATALOG, CONFIG)
    truth = holdout.truth.toarray()
    metrics = evaluation.evaluate_scorer(lambda rows: truth[rows].astype(float), holdout, [2])
    # u1 has 2 relevant, u2 1: both fit in the first 2
    assert metrics["recall_at_2"] == 1.0
    assert metrics["ndcg_at_2"] == 1.0


def test_scorer_shape_and_nan_are_reported():
    holdout = evaluation.build_holdout(tiny_examples(), CATALOG, CONFIG)
    with pytest.raises(ValueError, match="shape"):
        evaluation.evaluate_scorer(lambda rows: np.zeros((len(rows), 3)), holdout, [1])
    with pytest.raises(ValueError, match="NaN"):
        evaluation.evaluate_scorer(lambda rows: np.full((len(rows), 5), np.nan), holdout, [1])


def test_bad_inputs_name_the_problem():
    examples = tiny_examples()
    with pytest.raises(ValueError, match=r"lacks columns \['split'\]"):
        evaluation.build_holdout(examples.drop_columns(["split"]), CATALOG, CONFIG)
    bad_split = examples.set_column(4, "split", pa.array(["train"] * 9 + ["test"]))
    with pytest.raises(ValueError, match="row 9: split"):
        evaluation.build_holdout(bad_split, CATALOG, CONFIG)
    with pytest.raises(ValueError, match="no rows with split == 'eval'"):
        evaluation.build_holdout(examples.slice(0, 5), CATALOG, CONFIG)
    with pytest.raises(ValueError, match="unique"):
        evaluation.build_holdout(examples, pa.table({"item_id": ["a", "a"]}), CONFIG)
