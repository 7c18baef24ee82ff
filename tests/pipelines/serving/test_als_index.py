"""ALS retrieval over a large catalog: a ScaNN tree over the raw post factors, checked against exact
inner-product search, and exact search where the catalog is small or the tree's recall is too low; the
tree of a served night is built once by the index stage and searched by every shard."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import SYSTEM, LakePaths
from pipelines.core.settings import CandidatesConfig, IndexConfig, Settings
from pipelines.serving.exact_search import exact_top_k
from pipelines.serving.index import build_scann_index, index_settings
from pipelines.serving.index_store import (
    AlsTree,
    build_and_publish_index,
    index_items,
    load_als_index,
    load_index,
)
from pipelines.serving.inputs import shard_parts
from pipelines.serving.retrievers import AlsRetriever, UserHistory
from pipelines.serving.system import ServedSystem
from pipelines.training import registry
from pipelines.training.als import AlsModel, AlsParams, save_als

from .index_data import DS, EXACT, clustered, ids_for, table_of

FACTORS = 16
T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
ALS_VERSION = registry.new_version(DS, {"kind": "als", "factors": FACTORS})
# A tree even over these small catalogs; a third of the leaves searched, as k = 100 is a large part of them.
TREE = IndexConfig(brute_force_below=0, leaves_to_search_fraction=0.3)


def als_world(n_posts: int, n_users: int, seed: int = 5) -> tuple[AlsModel, UserHistory]:
    """Post factors around 40 taste centres, of uneven norms, and users who each engaged with four posts
    of one taste."""
    model, interactions = als_interactions(n_posts, n_users, seed)
    return model, UserHistory.from_interactions(interactions)


def als_interactions(n_posts: int, n_users: int, seed: int = 5) -> tuple[AlsModel, pa.Table]:
    """:func:`als_world`'s model and its users' ``interactions`` input rows."""
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
    return model, interactions


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


# -- the tree is built once, by the index stage, and every shard searches it --------------------------------
def served_als_night(tmp_path: Path, n_posts: int, index: IndexConfig) -> Settings:
    """A lake whose night ``DS`` serves ALS: its model exported, the catalog and the users' interactions
    (in two shards) published as the night's inputs."""
    model, interactions = als_interactions(n_posts, 300)
    settings = Settings(
        data_dir=tmp_path, lake=str(tmp_path / "lake"), index=index, candidates=CandidatesConfig(num_shards=2)
    )
    lake = Lake(settings.lake_url)
    save_als(model, lake, ALS_VERSION)
    staging = lake.begin_publish(LakePaths.inputs(DS))
    files = [LakePaths.input_file("items")]
    lake.write_parquet(f"{staging}/{files[0]}", pa.table({"item_id": model.item_ids}))
    for shard, part in enumerate(shard_parts(interactions, 2)):
        files.append(LakePaths.input_file("interactions", shard))
        lake.write_parquet(f"{staging}/{files[-1]}", part)
    lake.publish(LakePaths.inputs(DS), staging, files, metadata={"num_shards": 2})
    system = ServedSystem("als", None, als_version=ALS_VERSION, diversify=False)
    registry.promote(
        lake,
        SYSTEM,
        {"version": registry.new_version(DS, system.to_json()), "system": system.to_json()},
        None,
    )
    return settings


def test_the_index_stage_publishes_the_als_tree_every_shard_searches(tmp_path: Path, caplog) -> None:
    settings = served_als_night(tmp_path, 6000, TREE)
    lake = Lake(settings.lake_url)
    result = index_items(lake, DS, settings)
    assert not result.get("skipped") and result["model_version"] == ALS_VERSION
    assert result["als"]["search"] == "tree_exact" and result["als"]["n_items"] == 6000
    assert result["recall"] >= TREE.min_recall
    assert lake.read_manifest(LakePaths.index(DS))["metadata"]["als"] == result["als"]

    model, history = als_world(6000, 300)
    catalog = model.item_ids
    published = load_als_index(lake, DS, ALS_VERSION)
    assert published is not None and not published.normalized
    shard = AlsRetriever.build(history, model, catalog, settings.index, published, build_tree=False)
    in_memory = AlsRetriever.build(history, model, catalog, TREE)  # what a shard used to build itself
    assert in_memory.index is not None and shard.index.settings == in_memory.index.settings
    queries = shard.queries(users_table(300))
    for got, want in zip(shard.search(queries, 100), in_memory.search(queries, 100), strict=True):
        np.testing.assert_array_equal(got, want)
    # Another ALS model, or another catalog (a tree left by an earlier run), never searches this tree.
    assert load_als_index(lake, DS, registry.new_version(DS, {"kind": "als"})) is None
    every_other = catalog.take(pa.array(range(0, 6000, 2)))
    with caplog.at_level(logging.WARNING):
        stale = AlsRetriever.build(history, model, every_other, TREE, published, build_tree=False)
    assert stale.index is None and "holds 6000 posts, not the 3000 posts" in caplog.text
    queries = stale.queries(users_table(300))
    exact = exact_top_k(model.item_factors[::2], queries, 30)[0]
    np.testing.assert_array_equal(stale.search(queries, 30)[0], exact)


def test_a_small_catalog_publishes_no_als_tree_and_shards_search_exactly(tmp_path: Path) -> None:
    settings = served_als_night(tmp_path, 800, IndexConfig())
    lake = Lake(settings.lake_url)
    result = index_items(lake, DS, settings)
    assert result["skipped"] and "ALS factors are searched exactly (800 posts, fewer than" in result["reason"]
    assert not lake.is_published(LakePaths.index(DS)) and load_als_index(lake, DS, ALS_VERSION) is None
    model, history = als_world(800, 300)
    shard = AlsRetriever.build(history, model, model.item_ids, TREE, None, build_tree=False)
    assert shard.index is None  # no tree of its own, even where a replay would build one
    queries = shard.queries(users_table(300))
    np.testing.assert_array_equal(
        shard.search(queries, 30)[0], exact_top_k(model.item_factors, queries, 30)[0]
    )


def test_a_tree_is_published_next_to_the_two_tower_index(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    items, queries = clustered(3000, 32, 30, seed=5)
    model, history = als_world(6000, 300)
    tree = AlsRetriever.build(history, model, model.item_ids, TREE).index
    assert tree is not None
    als = AlsTree(ALS_VERSION, 6000, 1.0, tree)
    report = build_and_publish_index(lake, DS, table_of(ids_for(3000), items), queries, EXACT, als=als)
    als_files = sorted(f for f in report.files if f.startswith("als/"))
    assert als_files[:2] == ["als/index.json", "als/item_ids.parquet"] and als_files[2].startswith(
        "als/scann/"
    )
    assert lake.read_manifest(LakePaths.index(DS))["metadata"]["als"]["search"] == "tree_exact"
    two_tower = load_index(lake, LakePaths.index(DS))
    assert two_tower.n_items == 3000 and two_tower.normalized
    loaded = load_als_index(lake, DS, ALS_VERSION)
    assert loaded is not None and loaded.n_items == 6000 and loaded.recall == tree.recall
    np.testing.assert_array_equal(loaded.item_ids, tree.item_ids)
