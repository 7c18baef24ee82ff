"""ALS retrieval over a large catalog: a ScaNN tree over the raw post factors, checked against exact
inner-product search, and exact search where the catalog is small or the tree's recall is too low."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.settings import IndexConfig
from pipelines.serving.exact_search import exact_top_k
from pipelines.serving.index import build_scann_index, index_settings
from pipelines.serving.retrievers import AlsRetriever, UserHistory
from pipelines.training.als import AlsModel, AlsParams

from .index_data import EXACT, clustered, ids_for

FACTORS = 16
T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
# A tree even over these small catalogs; a third of the leaves searched, as k = 100 is a large part of them.
TREE = IndexConfig(brute_force_below=0, leaves_to_search_fraction=0.3)


def als_world(n_posts: int, n_users: int, seed: int = 5) -> tuple[AlsModel, UserHistory]:
    """Post factors around 40 taste centres, of uneven norms, and users who each engaged with four posts
    of one taste."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, FACTORS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    taste = rng.integers(0, 40, n_posts)
    vectors = centres[taste] + 0.35 * rng.standard_normal((n_posts, FACTORS)) / np.sqrt(FACTORS)
    vectors *= rng.lognormal(0.0, 0.5, (n_posts, 1))
    model = AlsModel(pa.array(ids_for(n_posts).tolist()), vectors.astype(np.float32), AlsParams(FACTORS))
    users = np.repeat(np.arange(n_users), 4)
    posts = [rng.choice(np.flatnonzero(taste == t), 4) for t in rng.integers(0, 40, n_users)]
    interactions = pa.table(
        {
            "user_id": pa.array([f"u{u}" for u in users]),
            "item_id": pa.array(ids_for(n_posts)[np.concatenate(posts)].tolist()),
            "event_ts": pa.array([T0] * len(users), pa.timestamp("us", tz="UTC")),
            "n_events": pa.array(np.ones(len(users), np.int64)),
        }
    )
    return model, UserHistory.from_interactions(interactions)


def users_table(n: int) -> pa.Table:
    return pa.table({"user_id": [f"u{u}" for u in range(n)]})


def test_raw_inner_products_keep_the_norms_a_cosine_index_drops() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 5.0], [0.0, 0.0]], np.float32)
    cosine = build_scann_index(np.array(["a", "b"]), vectors[:2], EXACT)
    raw = build_scann_index(np.array(["a", "b", "c"]), vectors, EXACT, normalize=False)
    query = np.array([[0.9, 0.3]], np.float32)
    assert cosine.search(query, 2)[0].tolist() == [["a", "b"]]
    ids, scores = raw.search(query, 3)
    assert ids.tolist() == [["b", "a", "c"]]  # 1.5 > 0.9 > 0: the all-zero post is allowed and scores 0
    np.testing.assert_allclose(scores, [[1.5, 0.9, 0.0]], rtol=1e-6)


def test_a_tree_with_exact_leaves_scores_exactly_and_needs_no_reordering() -> None:
    settings = index_settings(1_000_000, FACTORS, IndexConfig(), exact_leaves=True)
    assert (settings.mode, settings.num_leaves, settings.reorder_for(500)) == ("tree_exact", 1500, 0)
    items, queries = clustered(5000, FACTORS, 40, 3)
    items *= np.random.default_rng(3).lognormal(0.0, 0.5, (5000, 1)).astype(np.float32)
    index = build_scann_index(ids_for(5000), items, TREE, queries, normalize=False, exact_leaves=True)
    assert index.settings.mode == "tree_exact" and index.recall is not None and index.recall >= 0.95
    positions, scores = index.search_positions(queries, 50)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, positions, 1), rtol=1e-5)
    again = build_scann_index(ids_for(5000), items, TREE, normalize=False, exact_leaves=True)
    for mine, theirs in zip(again.search_positions(queries, 50), (positions, scores), strict=True):
        np.testing.assert_array_equal(mine, theirs)  # a rerun of a shard builds the same tree


def test_als_retrieval_over_a_large_catalog_searches_a_checked_tree() -> None:
    model, history = als_world(6000, 300)
    # The catalog: every other model post (a post the model never saw is never retrieved) plus new ones.
    catalog = pa.array([*ids_for(6000)[::2].tolist(), "new-1", "new-2"])
    retriever = AlsRetriever.build(history, model, catalog, TREE)
    assert retriever.index is not None and retriever.index.settings.mode == "tree_exact"
    assert retriever.index.recall is not None and retriever.index.recall >= TREE.min_recall
    queries = retriever.queries(users_table(300))
    positions, scores = retriever.search(queries, 100)
    exact = AlsRetriever.build(history, model, catalog, EXACT)
    assert exact.index is None
    exact_positions, _ = exact.search(queries, 100)
    pairs = zip(positions, exact_positions, strict=True)
    assert np.mean([len(np.intersect1d(a, e)) / 100 for a, e in pairs]) >= 0.95
    # Catalog rows, never a post the model lacks; each score is the post's exact inner product.
    assert positions.min() >= 0 and positions.max() < 3000
    factors = model.item_factors[2 * positions]
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, factors), rtol=1e-4, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "best first"
    np.testing.assert_array_equal(exact_positions[:, 0], positions[:, 0])


def test_a_small_catalog_is_searched_exactly_as_before() -> None:
    model, history = als_world(800, 50)
    catalog = pa.array(ids_for(800).tolist())
    retriever = AlsRetriever.build(history, model, catalog, IndexConfig())
    assert retriever.index is None
    queries = retriever.queries(users_table(50))
    positions, scores = retriever.search(queries, 30)
    expected_positions, expected_scores = exact_top_k(model.item_factors, queries, 30)
    np.testing.assert_array_equal(positions, expected_positions)
    np.testing.assert_array_equal(scores, expected_scores)


def test_a_tree_that_fails_the_recall_check_leaves_the_search_exact(caplog) -> None:
    model, history = als_world(6000, 300)
    catalog = pa.array(ids_for(6000).tolist())
    poor = IndexConfig(brute_force_below=0, leaves_to_search_fraction=0.001, min_recall=0.999)
    with caplog.at_level(logging.WARNING):
        retriever = AlsRetriever.build(history, model, catalog, poor)
    assert retriever.index is None
    assert "failed the recall check" in caplog.text and "below min_recall=0.9990" in caplog.text
    queries = retriever.queries(users_table(300))
    positions, _ = retriever.search(queries, 40)
    np.testing.assert_array_equal(positions, exact_top_k(model.item_factors, queries, 40)[0])


@pytest.mark.parametrize("normalize", [True, False])
def test_queries_are_checked_whether_or_not_they_are_normalised(normalize: bool) -> None:
    index = build_scann_index(ids_for(3), np.eye(3, dtype=np.float32) + 0.1, EXACT, normalize=normalize)
    with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[1\]"):
        index.search(np.array([[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]], np.float32), 2)
