"""Item index: ScaNN against exact brute force, the recall gate, lake round trip, input checks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.core.settings import IndexConfig
from pipelines.serving.index import (
    MISSING_ID,
    IndexRecallError,
    build_and_publish_index,
    build_index,
    embeddings_from_table,
    exact_top_k,
    index_settings,
    load_index,
    measure_recall,
)

DS = dt.date(2026, 11, 22)
EXACT = IndexConfig(brute_force_below=10**9)
TREE = IndexConfig(brute_force_below=0)
# One leaf of ~82 searched and no exact re-scoring: misses most neighbours on the clustered fixture.
BAD_TREE = IndexConfig(brute_force_below=0, leaves_to_search_fraction=0.001, reorder_multiplier=0)


def ids_for(n: int) -> np.ndarray:
    return np.array([f"item-{i:05d}" for i in range(n)])


def clustered(n: int, dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries around the same random unit centres (within-cluster cosine about 0.9)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        points = centres[rng.integers(n_clusters, size=m)] + 0.35 * rng.standard_normal((m, dim)) / np.sqrt(
            dim
        )
        return points.astype(np.float32)

    return draw(n), draw(200)


@pytest.fixture(scope="module")
def clustered_fixture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = clustered(3000, 32, 30, seed=5)
    return ids_for(3000), items, queries


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def table_of(ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    return pa.table(
        {"item_id": pa.array(ids.tolist()), "embedding": pa.array(vectors.tolist(), pa.list_(pa.float32()))}
    )


# -- settings ---------------------------------------------------------------------------------------


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


# -- exact search -----------------------------------------------------------------------------------


def test_exact_mode_hand_computed() -> None:
    # Items (normalised): a=(1,0), b=(0.8,0.6), c=(0,1), d=(-1,0); a is given as (3,0) to check that
    # items are normalised. Query (0.6,0.8): a 0.6, b 0.48+0.48=0.96, c 0.8, d -0.6.
    vectors = np.array([[3, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    index = build_index(np.array(["a", "b", "c", "d"]), vectors, EXACT)
    assert index.settings.mode == "brute_force"
    ids, scores = index.search(np.array([[0.6, 0.8], [5.0, 0.0]], dtype=np.float32), k=3)
    assert ids.tolist() == [["b", "c", "a"], ["a", "b", "c"]]
    # Second query (5,0) normalises to (1,0): a 1, b 0.8, c 0.
    np.testing.assert_allclose(scores, [[0.96, 0.8, 0.6], [1.0, 0.8, 0.0]], atol=1e-6)


def test_exact_mode_equals_numpy_brute_force() -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    index = build_index(ids_for(500), items, EXACT)
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


def test_exact_top_k_blocks_agree_with_a_full_sort() -> None:
    rng = np.random.default_rng(2)
    items = rng.standard_normal((1000, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items[500] = items[10]  # an exact tie: the earlier item must come first
    queries = np.concatenate([rng.standard_normal((29, 8)), items[10:11]]).astype(np.float32)
    full = queries @ items.T
    expected = np.lexsort((np.broadcast_to(np.arange(1000), full.shape), -full), axis=1)[:, :25]
    # Blocks of 7 items x 3 queries exercise the dense first blocks and the sparse later ones.
    positions, scores = exact_top_k(items, queries, 25, block_bytes=4 * 3 * 7, item_block=7)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5, atol=1e-5)
    assert positions[-1, :2].tolist() == [10, 500]
    default_positions, _ = exact_top_k(items, queries, 25)
    np.testing.assert_array_equal(default_positions, expected)


def test_k_beyond_the_catalog_is_clamped() -> None:
    vectors = np.eye(5, 4, dtype=np.float32) + 0.1
    index = build_index(ids_for(5), vectors, IndexConfig(num_neighbors=500))
    assert index.settings.num_neighbors == 5
    ids, scores = index.search(vectors[:2], k=10)
    assert ids.shape == scores.shape == (2, 5)
    assert all(sorted(row) == sorted(ids_for(5)) for row in ids.tolist())


# -- approximate search and the recall gate ---------------------------------------------------------


def test_tree_ah_reaches_the_recall_floor(clustered_fixture) -> None:
    ids, items, queries = clustered_fixture
    index = build_index(ids, items, TREE, queries)
    # 1.5 * sqrt(3000) = 82.2 -> 82 leaves, ceil(0.1 * 82) = ceil(8.2) = 9 searched.
    assert (index.settings.mode, index.settings.num_leaves, index.settings.leaves_to_search) == (
        "tree_ah",
        82,
        9,
    )
    assert index.recall is not None and index.recall >= 0.95
    assert measure_recall(index, queries, 100) == pytest.approx(index.recall)


def test_builds_are_reproducible(clustered_fixture) -> None:
    ids, items, queries = clustered_fixture
    first = build_index(ids, items, TREE).search_positions(queries, 20)
    second = build_index(ids, items, TREE).search_positions(queries, 20)
    np.testing.assert_array_equal(first[0], second[0])


def test_bad_config_raises_and_publishes_nothing(clustered_fixture, lake) -> None:
    ids, items, queries = clustered_fixture
    with pytest.raises(IndexRecallError, match=r"recall@100 = 0\.\d+ on 200 user queries") as caught:
        build_and_publish_index(lake, DS, table_of(ids, items), queries, BAD_TREE)
    assert caught.value.recall < 0.95 and caught.value.k == 100
    assert not lake.is_published(LakePaths.index(DS))
    assert lake.ls(LakePaths.index(DS)) == []
    with pytest.raises(ManifestError):
        load_index(lake, LakePaths.index(DS))


def test_padding_when_searched_leaves_hold_too_few_items(clustered_fixture) -> None:
    ids, items, queries = clustered_fixture
    index = build_index(ids, items, BAD_TREE)
    found, scores = index.search(queries, k=1000)
    # One leaf of ~3000 / 82 items cannot fill 1000 slots: the rest is padding.
    padding = found == MISSING_ID
    np.testing.assert_array_equal(padding, np.isnan(scores))
    assert padding[:, -1].all()
    for row in found:
        real = row[row != MISSING_ID]
        assert len(set(real)) == len(real)


# -- lake round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TREE, EXACT], ids=["tree_ah", "brute_force"])
def test_publish_and_load_give_identical_results(clustered_fixture, lake, config) -> None:
    ids, items, queries = clustered_fixture
    report = build_and_publish_index(lake, DS, table_of(ids, items), queries, config)
    assert report.n_items == 3000 and report.dim == 32 and report.recall >= 0.95
    manifest = lake.read_manifest(LakePaths.index(DS))
    assert manifest["metadata"]["n_items"] == 3000
    assert manifest["metadata"]["recall"] == report.recall
    assert sorted(manifest["files"]) == sorted(report.files)

    built = build_index(ids, items, config)
    loaded = load_index(lake, LakePaths.index(DS))
    assert loaded.settings == built.settings and loaded.recall == report.recall
    want_ids, want_scores = built.search(queries, 100)
    got_ids, got_scores = loaded.search(queries, 100)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


# -- input checks -----------------------------------------------------------------------------------


def good_vectors(n: int = 4) -> np.ndarray:
    return np.eye(n, 3, dtype=np.float32) + 0.5


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (np.array(["a", "b", "a", "c"]), good_vectors(), "duplicate item_ids .*'a': \\[0, 2\\]"),
        (np.array(["a", "b", "", "c"]), good_vectors(), "non-empty strings; rows \\[2\\]"),
        (np.array(["a", "b", "c"]), good_vectors(), "3 item_ids but 4 embedding rows"),
        (np.array(["a", "b", "c", "d"]), good_vectors().astype(np.int64), "float array, got dtype int64"),
        (np.array(["a", "b", "c", "d"]), good_vectors()[0], "2-d array"),
        (np.array([], dtype=str), np.zeros((0, 3), np.float32), "empty catalog"),
    ],
)
def test_bad_item_inputs_are_named(ids, vectors, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_index(ids, vectors, EXACT)


def test_nan_and_zero_rows_are_named() -> None:
    vectors = good_vectors()
    vectors[2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 1 rows, e.g. rows \[2\] \(items \['c'\]\)"
    ):
        build_index(np.array(["a", "b", "c", "d"]), vectors, EXACT)
    vectors = good_vectors()
    vectors[3] = 0
    with pytest.raises(ValueError, match=r"all zeros .* rows \[3\] \(items \['d'\]\)"):
        build_index(np.array(["a", "b", "c", "d"]), vectors, EXACT)


def test_bad_queries_are_named() -> None:
    index = build_index(np.array(["a", "b", "c", "d"]), good_vectors(), EXACT)
    with pytest.raises(ValueError, match="queries have 2 dimensions, the index has 3"):
        index.search(np.ones((1, 2), np.float32), 2)
    with pytest.raises(ValueError, match="NaN or infinite values in rows \\[1\\]"):
        index.search(np.array([[1, 0, 0], [np.inf, 0, 0]], np.float32), 2)
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(np.ones((1, 3), np.float32), 0)


def test_embeddings_table_checks() -> None:
    ok_ids, ok_vectors = embeddings_from_table(table_of(np.array(["a", "b"]), np.ones((2, 3), np.float32)))
    assert ok_ids.tolist() == ["a", "b"] and ok_vectors.shape == (2, 3) and ok_vectors.dtype == np.float32
    uneven = pa.table({"item_id": ["a", "b", "c"], "embedding": [[1.0, 2.0], [1.0, 2.0], [1.0]]})
    with pytest.raises(ValueError, match="row 0 has 2, rows \\[2\\] have \\[1\\] \\(items \\['c'\\]\\)"):
        embeddings_from_table(uneven)
    nulls = pa.table({"item_id": ["a", "b"], "embedding": [[1.0], None]})
    with pytest.raises(ValueError, match="null embedding in rows \\[1\\]"):
        embeddings_from_table(nulls)
    with pytest.raises(ValueError, match="lacks columns \\['embedding'\\]"):
        embeddings_from_table(pa.table({"item_id": ["a"]}))
    with pytest.raises(ValueError, match="must be list<float32>, got list<item: string>"):
        embeddings_from_table(pa.table({"item_id": ["a"], "embedding": [["x"]]}))


def test_stage_needs_queries(lake) -> None:
    with pytest.raises(ValueError, match="needs user query embeddings"):
        build_and_publish_index(lake, DS, table_of(ids_for(4), good_vectors()), np.zeros((0, 3)), EXACT)
