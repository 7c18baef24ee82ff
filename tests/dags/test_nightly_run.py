"""The three DAGs for real, through ``airflow dags test``, on a tiny world: features for the run date,
training (a system promoted), then the nightly DAG with run params, checked by what it PUBLISHED.

Feature history before the run date is built with the CLI (the same job the features DAG runs), to keep
the Airflow start-up cost to one run per DAG.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from tests.airflow_support import REPO, airflow_env, dags_test, run_airflow

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DS = "2026-11-20"
DAY = dt.date.fromisoformat(DS)
NUM_SHARDS = 3  # run params, different from the settings (2 shards, top 20) so their effect shows
TOP_K = 15


@pytest.fixture(scope="module")
def nightly(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("nightly_data")
    env = airflow_env(
        airflow_home,
        data_dir,
        NIGHTFEED_CANDIDATES__NUM_SHARDS="2",
        NIGHTFEED_CANDIDATES__TOP_K="20",
        NIGHTFEED_CANDIDATES__TOP_N="100",
        # A small selection keeps this under a few minutes: one candidate per retriever, 2 epochs, nights
        # two days apart, every model trained on the 8 days before its night.
        NIGHTFEED_TWO_TOWER__EPOCHS="2",
        NIGHTFEED_TWO_TOWER__TRAIN_DAYS="8",
        NIGHTFEED_RANKER__TRAIN_DAYS="6",
        NIGHTFEED_RANKER__EVAL_DAYS="2",
        NIGHTFEED_SELECTION__WINDOW_DAYS="2",
        NIGHTFEED_SELECTION__MIN_TRAIN_EXAMPLES="10",
        NIGHTFEED_SELECTION__TWO_TOWER_SEARCH="{}",
        NIGHTFEED_SELECTION__MMR_LAMBDAS="[0.8]",
        NIGHTFEED_SELECTION__RETRIEVAL_DEPTHS="[500]",
        NIGHTFEED_SELECTION__POPULARITY_WINDOWS="[7]",
        NIGHTFEED_SELECTION__KNN_NEIGHBORS="[20]",
        NIGHTFEED_SELECTION__ALS_FACTORS="[16]",
        NIGHTFEED_SELECTION__MAX_ITEM_AGE_CHOICES="[null]",
        NIGHTFEED_SELECTION__RANKERS='["none", "impressions"]',
    )
    day = dt.date.fromisoformat(DS)
    history = [
        "features",
        "--start",
        str(day - dt.timedelta(days=14)),
        "--end",
        str(day - dt.timedelta(days=1)),
    ]
    for args in (["world", "--scale", "tiny", "--end-date", DS], history):
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"pipelines {args}: {proc.stderr[-4000:]}"
    runs = {}
    for dag_id, conf in (
        ("nightfeed_features", None),
        ("nightfeed_training", None),
        ("nightfeed_nightly", {"num_shards": NUM_SHARDS, "top_k": TOP_K}),
    ):
        proc = dags_test(env, dag_id, DS, conf)
        assert proc.returncode == 0, f"{dag_id}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
        runs[dag_id] = proc
    yield {"env": env, "lake": Lake(str(data_dir / "lake")), "runs": runs}


def json_output(stdout: str) -> Any:
    """The JSON document an ``airflow ... -o json`` command printed (warnings may precede it)."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("[{")))


def task_states(env: dict[str, str], dag_id: str) -> list[dict[str, Any]]:
    listed = run_airflow(["dags", "list-runs", dag_id, "-o", "json"], env).stdout
    runs = [r for r in json_output(listed) if str(r["logical_date"]).startswith(DS)]
    assert len(runs) == 1, runs
    run_id = runs[0]["run_id"]
    return json_output(run_airflow(["tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"], env).stdout)


def test_every_nightly_task_succeeded_with_one_mapped_task_per_shard(nightly: dict[str, Any]) -> None:
    states = task_states(nightly["env"], "nightfeed_nightly")
    by_task: dict[str, list[str]] = {}
    for row in states:
        by_task.setdefault(row["task_id"], []).append(row["state"])
    assert by_task.pop("candidates_for_shard") == ["success"] * NUM_SHARDS
    assert by_task.pop("render_digests") == ["success"] * NUM_SHARDS
    assert by_task == {
        task: ["success"]
        for task in (
            "export_inputs",
            "embed_items",
            "build_index",
            "plan_shards",
            "publish_candidates",
            "plan_digests",
            "publish_digests",
            "write_report",
        )
    }


def test_training_promoted_the_system_the_nightly_served(nightly: dict[str, Any]) -> None:
    lake = nightly["lake"]
    champion = lake.read_pointer(LakePaths.champion("system")).content
    assert champion, "no system champion"
    system = champion["system"]
    for kind in ("two_tower", "ranker", "als"):
        if system[f"{kind}_version"]:
            assert lake.exists(f"{LakePaths.model_dir(kind, system[f'{kind}_version'])}/config.json"), kind
    assert lake.read_manifest(LakePaths.candidates(DAY))["metadata"]["system"] == system


def test_candidates_are_published_in_the_requested_shards(nightly: dict[str, Any]) -> None:
    lake = nightly["lake"]
    dataset = LakePaths.candidates(DAY)
    manifest = lake.read_manifest(dataset)
    assert manifest["files"] == [f"shard={s:03d}.parquet" for s in range(NUM_SHARDS)]
    assert manifest["metadata"]["num_shards"] == NUM_SHARDS and manifest["metadata"]["top_k"] == TOP_K
    served: set[str] = set()
    longest = 0
    for s, path in enumerate(lake.manifest_files(dataset)):
        table = lake.read_parquet(path)
        users = set(table.column("user_id").to_pylist())
        # Users go to shard crc32(user_id) % num_shards, computed here independently.
        assert {zlib.crc32(u.encode()) % NUM_SHARDS for u in users} <= {s}
        for user in users:
            ranks = table.filter(pc.equal(table.column("user_id"), user)).column("rank").to_pylist()
            assert sorted(ranks) == list(range(1, len(ranks) + 1)) and len(ranks) <= TOP_K, user
            longest = max(longest, len(ranks))
        served |= users
    assert longest == TOP_K
    inputs_users = {
        path for path in lake.manifest_files(LakePaths.inputs(DAY)) if path.endswith("/users.parquet")
    }
    expected = set(lake.read_parquet(inputs_users.pop()).column("user_id").to_pylist())
    assert served == expected, "every user of the day's inputs has a published list"


def test_digests_and_report_are_published_from_those_candidates(nightly: dict[str, Any]) -> None:
    lake = nightly["lake"]
    digests = lake.read_manifest(LakePaths.digests(DAY))
    assert "messages.parquet" in digests["files"]
    index_path = next(
        p for p in lake.manifest_files(LakePaths.digests(DAY)) if p.endswith("/messages.parquet")
    )
    messages = lake.read_parquet(index_path).to_pylist()
    assert messages, "the tiny world has users due for a digest"
    candidates: dict[str, set[str]] = {}
    for path in lake.manifest_files(LakePaths.candidates(DAY)):
        for row in lake.read_parquet(path, ["user_id", "item_id"]).to_pylist():
            candidates.setdefault(row["user_id"], set()).add(row["item_id"])
    for message in messages:
        assert set(message["item_ids"]) <= candidates[message["user_id"]], message["user_id"]
    assert lake.is_published(LakePaths.reports(DAY))


def test_the_night_is_closed_naming_the_run_of_every_dataset(nightly: dict[str, Any]) -> None:
    from pipelines.core import night

    lake = nightly["lake"]
    closed = night.read_night(lake, DAY)
    assert closed is not None and closed["holder"].startswith("DAG run nightfeed_nightly/")
    assert closed["runs"] == {
        name: lake.read_manifest(dataset)["staging"]
        for name, dataset in LakePaths.night_datasets(DAY).items()
        if name != "index" or lake.is_published(dataset)  # a served system without two-tower has no index
    }
    # The lease ended with the night: another run may write it at once.
    night.hold(lake, DAY, "DAG run nightfeed_nightly/manual__next", 60)
