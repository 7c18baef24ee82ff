"""The popularity prior of two-tower retrieval: the prior's values by hand, how it re-orders a search
(exact and ScaNN paths alike), and that a weight of 0 leaves the index and its scores as they were."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.serving.exact_search import exact_top_k
from pipelines.serving.index import build_scann_index
from pipelines.serving.prior import log_engagement_share, prior_offsets
from pipelines.serving.recall import measure_recall
from tests.pipelines.serving.index_data import EXACT, TREE, clustered, ids_for


def _items(engagements: list[int]) -> pa.Table:
    return pa.table({"engagements_lookback": pa.array(engagements, pa.int64())})


def test_the_prior_is_the_smoothed_log_share_of_engagements_times_weight_and_temperature() -> None:
    # Counts 6, 2, 0: shares (6+1)/(8+3), (2+1)/11, 1/11.
    items = _items([6, 2, 0])
    np.testing.assert_allclose(log_engagement_share(items), np.log([7 / 11, 3 / 11, 1 / 11]))
    np.testing.assert_allclose(
        prior_offsets(items, 2.0, 0.05), 2.0 * 0.05 * np.log([7 / 11, 3 / 11, 1 / 11]), rtol=1e-6
    )
    assert prior_offsets(items, 0.0, 0.05) is None


def test_the_prior_shifts_the_ranking_as_computed_by_hand() -> None:
    # Items a=(1,0), b=(0.8,0.6), c=(0,1); query (1,0): cosines a 1, b 0.8, c 0. Engagements 0, 9, 90 of
    # 99 (+3 smoothing): log q = log(1/102), log(10/102), log(91/102). Weight 1 at T 0.1 adds
    # -0.4625, -0.2322, -0.0114: a 0.5375, b 0.5678, c -0.0114, so b overtakes a.
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    items = _items([0, 9, 90])
    offsets = prior_offsets(items, 1.0, 0.1)
    expected = np.array([1.0, 0.8, 0.0]) + 0.1 * np.log(np.array([1, 10, 91]) / 102)
    plain = build_scann_index(np.array(["a", "b", "c"]), vectors, EXACT)
    ids, scores = plain.search(np.array([[2.0, 0.0]], np.float32), 3)
    assert ids.tolist() == [["a", "b", "c"]]
    index = build_scann_index(np.array(["a", "b", "c"]), vectors, EXACT, offsets=offsets)
    ids, scores = index.search(np.array([[2.0, 0.0]], np.float32), 3)
    assert ids.tolist() == [["b", "a", "c"]]
    np.testing.assert_allclose(scores[0], expected[[1, 0, 2]], atol=1e-6)
    # Exact search over the vectors the index holds, with the queries it searches, agrees.
    positions, exact = exact_top_k(index.datapoints, index.query_vectors(np.array([[2.0, 0.0]])), 3)
    assert positions.tolist() == [[1, 0, 2]]
    np.testing.assert_allclose(exact, scores, atol=1e-6)


def test_scann_tree_search_with_a_prior_finds_the_exact_neighbours() -> None:
    items, queries = clustered(3000, 16, 20, seed=3)
    rng = np.random.default_rng(4)
    offsets = (0.1 * np.log(rng.dirichlet(np.full(3000, 0.3)) + 1e-6)).astype(np.float32)
    index = build_scann_index(ids_for(3000), items, TREE, queries, offsets=offsets)
    assert index.settings.mode == "tree_ah" and index.settings.score_offset
    assert index.recall is not None and index.recall >= 0.95
    # The prior moves the exact neighbours: they are not those of the cosine alone.
    exact, _ = exact_top_k(index.datapoints, index.query_vectors(queries), 20)
    cosine, _ = exact_top_k(index.embeddings, index.query_vectors(queries)[:, :-1], 20)
    assert (exact != cosine).any()
    positions, scores = index.search_positions(queries[:50], 20)
    unit = queries[:50] / np.linalg.norm(queries[:50], axis=1, keepdims=True)
    by_hand = np.einsum("qd,qkd->qk", unit, index.embeddings[positions]) + offsets[positions]
    np.testing.assert_allclose(scores, by_hand, atol=1e-3)


@pytest.mark.parametrize("config", [EXACT, TREE])
def test_weight_zero_builds_the_index_of_today(config) -> None:
    items, queries = clustered(1500, 8, 10, seed=5)
    offsets = prior_offsets(_items(list(range(1500))), 0.0, 0.1)
    today = build_scann_index(ids_for(1500), items, config)
    zero = build_scann_index(ids_for(1500), items, config, offsets=offsets)
    assert not zero.settings.score_offset and zero.settings == today.settings
    got, want = zero.search_positions(queries, 30), today.search_positions(queries, 30)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert measure_recall(zero, queries, 30) == measure_recall(today, queries, 30)
