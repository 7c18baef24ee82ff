"""Candidate shards on the tiny world: the shard rule, atomic publishing, reruns, dry runs, the warehouse
copy; and the models of the chain (promotion, tower reuse, retraining skipped)."""

from __future__ import annotations

import hashlib
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
from pipelines.serving.inputs import read_input
from pipelines.serving.shards import read_candidates, shard_of
from pipelines.training.registry import current_champion
from tests.pipelines.serving.nightly_world import DS, SHARDS

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


def test_the_published_night_is_also_in_the_warehouse_partition_of_its_ds(world: dict[str, Any]) -> None:
    published = read_candidates(world["lake"], DS)
    assert world["published"]["warehouse"] == {"table": "nightly_candidates", "rows": published.num_rows}
    with DuckDBWarehouse(world["settings"].duckdb_file, read_only=True) as warehouse:
        loaded = warehouse.query("select * from `nightly_candidates` order by user_id, rank")
    assert set(loaded.column("ds").to_pylist()) == {DS}
    ordered = published.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    assert loaded.drop_columns(["ds"]).to_pylist() == ordered.to_pylist()


def test_shards_split_users_stably() -> None:
    ids = [f"u{i:07d}" for i in range(1000)]
    shards = shard_of(ids, 8)
    assert np.array_equal(shards, shard_of(ids, 8))
    assert set(shards) == set(range(8))
    assert np.bincount(shards).min() > 60  # roughly even: 125 expected per shard


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
