"""The ScaNN item index: settings by catalog size, exact and tree search, clamping, reproducible builds,
padding."""

from __future__ import annotations

import numpy as np

from pipelines.core.settings import IndexConfig
from pipelines.serving.index import MISSING_ID, build_scann_index, index_settings
from pipelines.serving.recall import measure_recall
from tests.pipelines.serving.index_data import BAD_TREE, EXACT, TREE, ids_for


def test_settings_scale_with_the_catalog() -> None:
    config = IndexConfig()
    small = index_settings(19_999, 64, config)
    assert small.mode == "brute_force" and small.reorder_for(100) == 0
    big = index_settings(1_000_000, 64, config)
    # num_leaves = 1.5 * sqrt(1e6) = 1500; leaves_to_search = ceil(0.1 * 1500) = 150.
    assert (big.mode, big.num_leaves, big.leaves_to_search) == ("tree_ah", 1500, 150)
    assert big.reorder_for(100) == config.reorder_multiplier * 100
    tiny = index_settings(999, 8, IndexConfig(brute_force_below=0, num_neighbors=5000))
    # Under 1000 items the index is exact whatever brute_force_below says, with neighbours clamped.
    assert (tiny.mode, tiny.num_neighbors) == ("brute_force", 999)
    few_leaves = index_settings(1000, 8, IndexConfig(brute_force_below=0, leaves_per_sqrt_items=0.01))
    # 0.01 * sqrt(1000) = 0.3 rounds to 0 leaves: at least one leaf, and it is searched.
    assert (few_leaves.num_leaves, few_leaves.leaves_to_search) == (1, 1)


def test_exact_mode_hand_computed() -> None:
    # Items (normalised): a=(1,0), b=(0.8,0.6), c=(0,1), d=(-1,0); a is given as (3,0) to check that
    # items are normalised. Query (0.6,0.8): a 0.6, b 0.48+0.48=0.96, c 0.8, d -0.6.
    vectors = np.array([[3, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    index = build_scann_index(np.array(["a", "b", "c", "d"]), vectors, EXACT)
    assert index.settings.mode == "brute_force"
    ids, scores = index.search(np.array([[0.6, 0.8], [5.0, 0.0]], dtype=np.float32), k=3)
    assert ids.tolist() == [["b", "c", "a"], ["a", "b", "c"]]
    # Second query (5,0) normalises to (1,0): a 1, b 0.8, c 0.
    np.testing.assert_allclose(scores, [[0.96, 0.8, 0.6], [1.0, 0.8, 0.0]], atol=1e-6)


def test_exact_mode_equals_numpy_brute_force() -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    index = build_scann_index(ids_for(500), items, EXACT)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = q @ unit.T
    expected = np.argsort(-full, axis=1)[:, :20]
    # In this fixture neighbouring scores of the top 21 differ by more than float32 rounding, so any
    # exact method must return the same order.
    gaps = -np.diff(np.sort(full, axis=1)[:, ::-1][:, :21], axis=1)
    assert gaps.min() > 1e-5
    positions, scores = index.search_positions(queries, 20)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-5)
    ids, _ = index.search(queries, 20)
    np.testing.assert_array_equal(ids, ids_for(500)[expected])
    assert measure_recall(index, queries, 20) == 1.0


def test_k_beyond_the_catalog_is_clamped() -> None:
    vectors = np.eye(5, 4, dtype=np.float32) + 0.1
    index = build_scann_index(ids_for(5), vectors, IndexConfig(num_neighbors=500))
    assert index.settings.num_neighbors == 5
    ids, scores = index.search(vectors[:2], k=10)
    assert ids.shape == scores.shape == (2, 5)
    assert all(sorted(row) == sorted(ids_for(5)) for row in ids.tolist())


def test_builds_are_reproducible(clustered_fixture) -> None:
    ids, items, queries = clustered_fixture
    first = build_scann_index(ids, items, TREE).search_positions(queries, 20)
    second = build_scann_index(ids, items, TREE).search_positions(queries, 20)
    np.testing.assert_array_equal(first[0], second[0])


def test_padding_when_searched_leaves_hold_too_few_items(clustered_fixture) -> None:
    ids, items, queries = clustered_fixture
    index = build_scann_index(ids, items, BAD_TREE)
    found, scores = index.search(queries, k=1000)
    # One leaf of ~3000 / 82 items cannot fill 1000 slots: the rest is padding.
    padding = found == MISSING_ID
    np.testing.assert_array_equal(padding, np.isnan(scores))
    assert padding[:, -1].all()
    for row in found:
        real = row[row != MISSING_ID]
        assert len(set(real)) == len(real)
