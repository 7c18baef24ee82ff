"""Candidate shards on the tiny world: the shard rule, atomic publishing, reruns, dry runs, the warehouse
copy, a past night re-run after a newer promotion; and the models of the chain (promotion, tower reuse,
retraining skipped)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core import jobs
from pipelines.core.context import settings_with
from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake, ManifestError
from pipelines.core.params import overrides_from_params
from pipelines.core.paths import SYSTEM, LakePaths
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.jobs import run
from pipelines.serving.inputs import SHARDED_INPUTS, read_input, read_shard_input
from pipelines.serving.sharding import shard_of
from pipelines.serving.shards import publish_candidates, read_candidates
from pipelines.serving.system import ServedSystem
from pipelines.training import registry
from pipelines.training.registry import current_champion
from tests.pipelines.serving.nightly_world import DS, SHARDS, run_digests, run_nightly

pytestmark = pytest.mark.slow


def test_the_promoted_system_is_the_one_served(world: dict[str, Any]) -> None:
    trained = world["trained"]
    assert trained["promoted"], trained["reason"]
    system = world["published"]["system"]
    exported = {e["kind"]: e["version"] for e in trained["exported"]}
    assert system["retriever"] == "two_tower" and system["diversify"]
    assert system["two_tower_version"] == exported["two_tower"]
    assert system["ranker_version"] == exported["ranker"]
    champion = current_champion(world["lake"], SYSTEM)
    assert champion["version"] == trained["version"] and champion["system"] == system


def test_the_nightly_retrieves_with_the_popularity_prior_the_replay_used(world: dict[str, Any]) -> None:
    # The published index carries the served system's prior: the nightly context retrieves what a replay's
    # in-memory retriever over the same inputs retrieves, cosine + T * beta * log q_j, computed by hand.
    from pipelines.core.run_date import end_of_day
    from pipelines.serving.context import load_context
    from pipelines.serving.model_store import ModelStore
    from pipelines.serving.retrieval import make_retriever

    lake, settings = world["lake"], world["settings"]
    system = ServedSystem.from_json(world["published"]["system"])
    assert system.popularity_prior == 1.0
    ctx = load_context(lake, DS, settings, system, 0, 1)
    models = ModelStore(lake)
    replayed = make_retriever(
        system, models, ctx.items, ctx.item_vectors, None, end_of_day(DS), settings.index
    )
    users = read_input(lake, DS, "users").slice(0, 40)
    queries = ctx.retriever.queries(users)
    positions, scores = ctx.retriever.search(queries, 30)
    again, again_scores = replayed.search(replayed.queries(users), 30)
    np.testing.assert_array_equal(positions, again)
    np.testing.assert_allclose(scores, again_scores, atol=1e-5)
    engagements = ctx.items.column("engagements_lookback").to_numpy().astype(float)
    log_q = np.log((engagements + 1) / (engagements.sum() + len(engagements)))
    temperature = models.get("two_tower", system.two_tower_version).config.temperature
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    by_hand = np.einsum("ud,ukd->uk", unit, ctx.item_vectors[positions]) + temperature * log_q[positions]
    np.testing.assert_allclose(scores, by_hand, atol=1e-4)


def test_a_blended_system_fuses_the_published_index_with_the_nights_popularity(world: dict[str, Any]) -> None:
    # A blend read back for a shard: the two-tower over the published index and most popular over the
    # night's interactions input, fused by reciprocal rank, as the replay builds it in memory.
    import dataclasses

    from pipelines.core.run_date import end_of_day
    from pipelines.serving.blend import fuse_ranks
    from pipelines.serving.context import load_context
    from pipelines.serving.retrievers import PopularityRetriever

    lake, settings = world["lake"], world["settings"]
    system = ServedSystem.from_json(world["published"]["system"])
    blended = dataclasses.replace(
        system, blend_retriever="most_popular", blend_weight=0.5, popularity_window_days=7
    )
    alone, ctx = (load_context(lake, DS, settings, s, 1, SHARDS) for s in (system, blended))
    users = read_shard_input(lake, DS, "users", 1, SHARDS).slice(0, 40)
    towers, _ = alone.retriever.search(alone.retriever.queries(users), 30)
    popular = PopularityRetriever.fit(
        read_input(lake, DS, "interactions"), ctx.item_id_array, end_of_day(DS), 7
    )
    ranked, _ = popular.search(popular.queries(users), 30)
    positions, scores = ctx.retriever.search(ctx.retriever.queries(users), 30)
    expected, expected_scores = fuse_ranks(towers, ranked, 0.5, 30)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_array_equal(scores, expected_scores)
    assert not np.array_equal(positions, towers) and not np.array_equal(positions, ranked)


def copy_of_chain(world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """The lake of a copy of the chain's data, made the data of this test, so the other tests keep their
    champion."""
    data_dir = tmp_path / "data"
    shutil.copytree(world["settings"].data_dir, data_dir)
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(data_dir))
    return Lake(settings_with(None).lake_url)


def promote_for_next_day(lake: Lake, system: ServedSystem, champion: str) -> str:
    """Promote ``system`` as trained on the day after ``DS`` over ``champion``; return its version."""
    version = registry.new_version(DS + dt.timedelta(days=1), system.to_json())
    registry.promote(
        lake, SYSTEM, {"version": version, "system": system.to_json()}, expected_champion=champion
    )
    return version


def test_a_blended_system_publishes_checked_lists_through_the_nightly(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a copy of the chain's data: the champion blended with most popular is promoted and served for the
    # night (as the current system); every shard checks its lists before they are published.
    import dataclasses

    lake = copy_of_chain(world, tmp_path, monkeypatch)
    served = current_champion(lake, SYSTEM)
    alone = ServedSystem.from_json(served["system"])
    blended = dataclasses.replace(
        alone, blend_retriever="most_popular", blend_weight=0.5, popularity_window_days=7
    )
    version = promote_for_next_day(lake, blended, served["version"])
    run_nightly()
    before = read_candidates(lake, DS)
    published = run_nightly(params={"use_current_system": True})
    assert published["system"] == blended.to_json() and published["system_choice"]["version"] == version
    lists = read_candidates(lake, DS)
    pairs = {(u, i) for u, i in zip(lists["user_id"].to_pylist(), lists["item_id"].to_pylist(), strict=True)}
    assert pairs != {
        (u, i) for u, i in zip(before["user_id"].to_pylist(), before["item_id"].to_pylist(), strict=True)
    }
    assert set(lists["user_id"].to_pylist()) == set(before["user_id"].to_pylist())
    seen = read_input(lake, DS, "seen")
    assert not pairs & set(zip(seen["user_id"].to_pylist(), seen["item_id"].to_pylist(), strict=True))


def test_the_published_night_is_also_in_the_warehouse_partition_of_its_ds(world: dict[str, Any]) -> None:
    published = read_candidates(world["lake"], DS)
    assert world["published"]["warehouse"] == {"table": "nightly_candidates", "rows": published.num_rows}
    with DuckDBWarehouse(world["settings"].duckdb_file, read_only=True) as warehouse:
        loaded = warehouse.query("select * from `nightly_candidates` order by user_id, rank")
    assert set(loaded.column("ds").to_pylist()) == {DS}
    ordered = published.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    assert loaded.drop_columns(["ds"]).to_pylist() == ordered.to_pylist()


def test_the_inputs_keyed_by_user_are_written_per_shard_and_a_shard_reads_its_own_part(
    world: dict[str, Any],
) -> None:
    lake: Lake = world["lake"]
    manifest = lake.read_manifest(LakePaths.inputs(DS))
    assert manifest["metadata"]["num_shards"] == SHARDS
    expected = {"items.parquet"} | {
        f"{name}/shard={k:03d}.parquet" for name in SHARDED_INPUTS for k in range(SHARDS)
    }
    assert set(manifest["files"]) == expected
    for name in SHARDED_INPUTS:
        whole = read_input(lake, DS, name)
        assert whole.num_rows == manifest["metadata"]["rows"][name]
        owner = shard_of(whole.column("user_id"), SHARDS)
        for k in range(SHARDS):
            part = read_shard_input(lake, DS, name, k, SHARDS)
            assert part.equals(whole.filter(pa.array(owner == k))), name
            # Each part keeps the order of the query (by user, then post).
            keys = part.select([c for c in ("user_id", "item_id") if c in part.column_names])
            assert keys.equals(keys.sort_by([(c, "ascending") for c in keys.column_names]))
        # Asked for another shard count, a reader gets the right users from the whole table.
        third = read_shard_input(lake, DS, name, 1, 3)
        assert third.equals(whole.filter(pa.array(shard_of(whole.column("user_id"), 3) == 1)))


def test_a_killed_run_keeps_the_previous_lists_and_a_retry_reproduces_them(world: dict[str, Any]) -> None:
    lake: Lake = world["lake"]
    before = read_candidates(lake, DS)
    manifest = lake.read_manifest(LakePaths.candidates(DS))
    plan = run(jobs.PLAN_SHARDS, DS)
    # The run dies after writing its first shard: nothing new is visible.
    run(jobs.CANDIDATES_FOR_SHARD, DS, **plan[0])
    with pytest.raises(ManifestError, match="missing files"):
        lake.publish(LakePaths.candidates(DS), plan[0]["staging"], ["shard=000.parquet", "shard=001.parquet"])
    assert lake.read_manifest(LakePaths.candidates(DS)) == manifest
    assert read_candidates(lake, DS).equals(before)
    # The retry runs every shard again and publishes: same inputs and models give the same lists.
    results = [run(jobs.CANDIDATES_FOR_SHARD, DS, **p) for p in plan]
    run(jobs.PUBLISH_CANDIDATES, DS, staging=plan[0]["staging"], shard_results=results)
    assert lake.read_manifest(LakePaths.candidates(DS))["staging"] != manifest["staging"]
    assert read_candidates(lake, DS).equals(before)


def test_publish_refuses_an_incomplete_set_of_shard_results(world: dict[str, Any]) -> None:
    plan = run(jobs.PLAN_SHARDS, DS)
    result = run(jobs.CANDIDATES_FOR_SHARD, DS, **plan[1])
    with pytest.raises(ValueError, match=r"shard results \[1\] do not cover shards \[0, 1\]"):
        run(jobs.PUBLISH_CANDIDATES, DS, staging=plan[1]["staging"], shard_results=[result])


def _lake_bytes(root: Path) -> dict[str, str]:
    """Every file under the lake but the dry-run scratch folders, by path, with the hash of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and path.relative_to(root).parts[0] != "dry-runs"
        and not path.name.endswith(".lock")
    }


def test_case_08_a_dry_run_writes_nothing_that_readers_see(world: dict[str, Any]) -> None:
    lake: Lake = world["lake"]
    root = Path(lake.path(""))
    before = _lake_bytes(root)
    params = {"dry_run_users": 40}
    for job in (jobs.EXPORT_INPUTS, jobs.EMBED_ITEMS, jobs.BUILD_INDEX):
        run(job, DS, params)
    plan = run(jobs.PLAN_SHARDS, DS, params)
    results = [run(jobs.CANDIDATES_FOR_SHARD, DS, params, **p) for p in plan]
    out = run(jobs.PUBLISH_CANDIDATES, DS, params, staging=plan[0]["staging"], shard_results=results)
    assert out["published"] is False and out["dry_run"] and out["users"] == 40
    # The output says where the sample is: the night's scratch folder.
    scratch = root / LakePaths.dry_run(DS)
    assert out["uri"] == str(scratch / LakePaths.candidates(DS))
    sampled = read_candidates(Lake(str(scratch)), DS)
    assert len(set(sampled.column("user_id").to_pylist())) == 40
    # Digests of a dry run: rendered from the dry run's own lists, a sample per shard, nothing published.
    digest_plan = run(jobs.PLAN_DIGESTS, DS, params)
    assert [p["staging"] for p in digest_plan] == [None] * SHARDS
    shards = [run(jobs.RENDER_DIGESTS, DS, params, **p) for p in digest_plan]
    assert all(s["file"] is None and s["messages_written"] == 0 for s in shards)
    assert 0 < sum(len(s["sample"]) for s in shards) <= 40 * SHARDS
    assert run(jobs.PUBLISH_DIGESTS, DS, params, staging=None, shard_results=shards)["published"] is False
    run(jobs.WRITE_REPORT, DS, params)
    # Inputs, embeddings, index, candidates, digests, facts and the report: not one byte changed.
    assert _lake_bytes(root) == before
    assert (scratch / LakePaths.reports(DS)).is_dir()


def test_params_become_overrides() -> None:
    assert overrides_from_params({"num_shards": 3, "top_k": 7, "dry_run_users": None}) == {
        "candidates": {"num_shards": 3, "top_k": 7}
    }
    with pytest.raises(PermanentError, match="num_shards"):
        settings_with({"num_shards": 0})


def test_candidate_files_have_the_published_schema(world: dict[str, Any]) -> None:
    from pipelines.core.schema import CANDIDATES

    lake: Lake = world["lake"]
    for path in lake.manifest_files(LakePaths.candidates(DS)):
        assert lake.read_parquet(path).schema.equals(CANDIDATES)
    assert isinstance(read_candidates(lake, DS), pa.Table)


def test_towers_can_be_used_without_keeping_the_loader_result(world: dict[str, Any]) -> None:
    from pipelines.training.two_tower import load_towers

    lake: Lake = world["lake"]
    items = read_input(lake, DS, "items").slice(0, 5)
    version = world["published"]["system"]["two_tower_version"]
    embed = load_towers(lake, version).embed_items  # the Towers object is dropped
    import gc

    gc.collect()
    assert np.isfinite(embed(items)).all()


def test_training_again_on_the_same_data_is_skipped_unless_forced(world: dict[str, Any]) -> None:
    lake: Lake = world["lake"]
    champion = current_champion(lake, SYSTEM)["version"]
    again = run(jobs.TRAIN_SYSTEM, DS)
    assert again["skipped"] and not again["promoted"] and again["version"] == champion
    assert "force_retrain" in again["reason"]
    forced = run(jobs.TRAIN_SYSTEM, DS, {"force_retrain": True})
    assert "skipped" not in forced
    test_night = forced["selection"]["test"]
    assert test_night["champion"]["role"] == "champion", "the champion was replayed on the same night"
    assert test_night["champion"]["system"] == world["published"]["system"]
    if forced["promoted"]:
        assert (
            forced["version"] != champion and current_champion(lake, SYSTEM)["version"] == forced["version"]
        )
    else:
        assert "champion" in forced["reason"] and current_champion(lake, SYSTEM)["version"] == champion


def test_a_dry_run_sample_is_seeded_and_the_same_for_every_shard(world: dict[str, Any]) -> None:
    from pipelines.serving.shards import dry_run_sample

    users = read_input(world["lake"], DS, "users")
    first, second = dry_run_sample(users, 7), dry_run_sample(users, 7)
    assert first.equals(second) and first.num_rows == 7
    assert first.column("user_id").to_pylist() != users.slice(0, 7).column("user_id").to_pylist()


def test_publish_refuses_shards_served_by_different_systems(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    staging = lake.begin_publish(LakePaths.candidates(DS))
    results = [
        {"shard": s, "users": 1, "rows": 1, "seconds": {}, "system": {}, "system_choice": {"version": v}}
        for s, v in ((0, "2026-11-20-a"), (1, "2026-11-22-b"))
    ]
    settings = settings_with({"num_shards": 2})
    with pytest.raises(ValueError, match=r"different systems \['2026-11-20-a', '2026-11-22-b'\]"):
        publish_candidates(lake, DS, staging, results, settings)
    assert not lake.is_published(LakePaths.candidates(DS))


def published_bytes(lake: Lake, dataset: str) -> dict[str, bytes]:
    """The bytes of every published file of ``dataset``, by file name."""
    return {path.rsplit("/", 1)[1]: lake.read_bytes(path) for path in lake.manifest_files(dataset)}


def test_a_past_night_re_run_after_a_newer_promotion_is_byte_identical_unless_asked_for_the_current(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a copy of the chain's data, so the other tests keep their champion; the night is served by the
    # champion in force now (an earlier test may have promoted another one).
    lake = copy_of_chain(world, tmp_path, monkeypatch)
    run_nightly()
    run_digests()
    candidates, digests = LakePaths.candidates(DS), LakePaths.digests(DS)
    night = {"candidates": published_bytes(lake, candidates), "digests": published_bytes(lake, digests)}
    served = current_champion(lake, SYSTEM)
    assert lake.read_manifest(candidates)["metadata"]["system_choice"]["version"] == served["version"]

    # A newer system, trained on the next day's data, is promoted.
    newer = ServedSystem("most_popular", None, diversify=False)
    version = promote_for_next_day(lake, newer, served["version"])
    again = run_nightly()
    run_digests()
    assert published_bytes(lake, candidates) == night["candidates"]
    assert published_bytes(lake, digests) == night["digests"]
    assert again["system"] == served["system"] and again["system_choice"]["rule"] == "as_of"
    assert again["system_choice"]["version"] == served["version"]

    # Asked for the current system, the night is served by the newer one, and the report says so.
    current = run_nightly(params={"use_current_system": True})
    assert current["system"] == newer.to_json()
    assert current["system_choice"]["version"] == version and current["system_choice"]["rule"] == "current"
    assert published_bytes(lake, candidates) != night["candidates"]
    run(jobs.WRITE_REPORT, DS)
    metrics_path = next(p for p in lake.manifest_files(LakePaths.reports(DS)) if p.endswith("/metrics.json"))
    metrics = json.loads(lake.read_bytes(metrics_path))
    served_tonight = metrics["system"]["served"]
    assert served_tonight["choice"]["rule"] == "current" and served_tonight["system"] == newer.to_json()
    assert metrics["index"] is None, "most popular needs no index: its skipped stage has no numbers"
