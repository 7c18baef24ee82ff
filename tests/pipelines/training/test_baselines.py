"""The servable baselines on hand-made logs: most popular, item-kNN and ALS."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from pipelines.core.lake import Lake
from pipelines.training.als import AlsParams, load_als, save_als, train_als
from pipelines.training.interactions import interaction_matrix
from pipelines.training.item_knn import best_per_row, fit_item_knn, knn_scores, top_per_row
from pipelines.training.popularity import popularity_scores

T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def log(rows: list[tuple[str, str, int]]) -> pa.Table:
    """(user, post, hours before T0) engagements."""
    return pa.table(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "event_ts": pa.array(
                [T0 - dt.timedelta(hours=h) for _, _, h in rows], pa.timestamp("us", tz="UTC")
            ),
        }
    )


CATALOG = pa.array(["a", "b", "c", "d"])


def test_popularity_counts_distinct_users_in_the_window() -> None:
    # a: u1 twice and u2 in the last day; b: u3 three days ago; c: nobody; "z" is not in the catalog.
    events = log([("u1", "a", 1), ("u1", "a", 2), ("u2", "a", 5), ("u3", "b", 72), ("u1", "z", 1)])
    assert popularity_scores(events, CATALOG, T0, 1).tolist() == [2.0, 0.0, 0.0, 0.0]
    assert popularity_scores(events, CATALOG, T0, 7).tolist() == [2.0, 1.0, 0.0, 0.0]
    # Engagements at or after as_of never count.
    assert popularity_scores(events, CATALOG, T0 - dt.timedelta(hours=3), None).tolist() == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]


def test_interaction_matrix_keeps_catalog_columns_and_counts_repeats() -> None:
    matrix = interaction_matrix(log([("u1", "a", 1), ("u1", "a", 2), ("u2", "d", 1)]), CATALOG)
    assert matrix.user_ids.to_pylist() == ["u1", "u2"]
    assert matrix.counts.toarray().tolist() == [[2, 0, 0, 0], [0, 0, 0, 1]]


def test_item_knn_cosine_on_hand_computed_co_occurrence() -> None:
    # Users: u1 {a, b}, u2 {a, b, c}, u3 {c, d}. |U_a|=2, |U_b|=2, |U_c|=2, |U_d|=1.
    engaged = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=float))
    sims = fit_item_knn(engaged, neighbors=2).toarray()
    # sim(a,b) = 2 / sqrt(2*2) = 1; sim(a,c) = 1 / 2 = 0.5; sim(c,d) = 1 / sqrt(2*1) = 0.7071.
    assert sims[0].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0])
    # c's neighbours: d (0.7071), then a and b tie at 0.5 and the lower column, a, is kept.
    assert sims[2].tolist() == pytest.approx([0.5, 0.0, 0.0, 1 / np.sqrt(2)])
    # One neighbour kept per post: c keeps d (0.7071), a keeps b.
    one = fit_item_knn(engaged, neighbors=1).toarray()
    assert (one > 0).sum(axis=1).tolist() == [1, 1, 1, 1] and one[2, 3] == pytest.approx(1 / np.sqrt(2))
    # A user who engaged with a only: b scores 1, c 0.5.
    positions, values = best_per_row(
        knn_scores(sp.csr_matrix(np.array([[1.0, 0, 0, 0]])), sp.csr_matrix(sims)), 3
    )
    assert positions.tolist() == [[1, 2, -1]] and values[0, :2].tolist() == pytest.approx([1.0, 0.5])


def test_item_knn_computed_in_blocks_of_posts_is_the_same_to_the_last_bit() -> None:
    # Popular posts co-occur with most others: the product is computed a few posts at a time.
    rng = np.random.default_rng(4)
    # Three posts everyone engaged with: equal similarities, ties broken by column.
    engaged = sp.hstack([np.ones((300, 3)), sp.random(300, 77, density=0.08, random_state=rng)]).tocsr()
    engaged.data[:] = 1.0
    whole = fit_item_knn(engaged, neighbors=7, block_entries=1 << 40)
    blocked = fit_item_knn(engaged, neighbors=7, block_entries=50)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(whole, name))
    # The same as a dense computation of the cosine, top 7 per post, without the post itself.
    x = engaged.toarray()
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    dense = co / np.outer(norms, norms)
    np.fill_diagonal(dense, 0.0)
    for post in range(80):
        expected = np.argsort(-dense[post], kind="stable")[:7]
        assert sorted(whole[post].indices) == sorted(expected[dense[post, expected] > 0]), post
    assert whole.nnz == 80 * 7 and whole.dtype == np.float32


def test_top_per_row_breaks_ties_by_column() -> None:
    kept = top_per_row(sp.csr_matrix(np.array([[0.5, 0.5, 0.5]])), 2).toarray()
    assert kept.tolist() == [[0.5, 0.5, 0.0]]


def test_als_ranks_a_users_community_first_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    # Two communities of 40 users: community k engages with posts 5k..5k+4 (and rarely outside).
    rows = []
    for u in range(80):
        own = 5 * (u // 40)
        rows += [(u, own + j) for j in rng.choice(5, 3, replace=False)] + [(u, int(rng.integers(10)))]
    counts = sp.csr_matrix((np.ones(len(rows)), tuple(np.array(rows).T)), shape=(80, 10))
    model = train_als(counts, pa.array([f"p{j}" for j in range(10)]), AlsParams(factors=2, iterations=10))
    new_user = sp.csr_matrix(([1.0, 1.0], ([0, 0], [5, 6])), shape=(1, 10))  # engaged with community 1
    scores = model.user_vectors(new_user) @ model.item_factors.T
    assert set(np.argsort(-scores[0])[:5]) == {5, 6, 7, 8, 9}
    lake = Lake(str(tmp_path))
    save_als(model, lake, "2026-11-20-20261121T000000000000Z-00000000")
    loaded = load_als(lake, "2026-11-20-20261121T000000000000Z-00000000")
    assert np.array_equal(loaded.item_factors, model.item_factors) and loaded.params == model.params
    again = train_als(counts, model.item_ids, AlsParams(factors=2, iterations=10))
    assert np.array_equal(again.item_factors, model.item_factors), "same data and seed, same factors"
