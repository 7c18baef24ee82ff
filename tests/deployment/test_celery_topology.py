"""The production topology for real (Postgres, Redis, the CeleryExecutor with 2 workers, all of Airflow's
components, configured from airflow.env) on a tiny world with a cheap served system (most popular):

- the scheduler's own features run of the latest day starts that day's nightly run, whose 4 candidate
  shards run on both workers;
- a features backfill of 3 days gets exactly one nightly run per day, in date order, each publishing its
  candidates; the nightly DAG itself can be backfilled;
- a worker is lost in the middle of a shard (its processes frozen, then killed, as a machine that dies):
  the shard is retried on the other worker and the published lists equal a clean run of that day.

The history and the champion are built with the CLI while the topology starts. One worker slot each, so
the 4 shards of a run go to both workers. Figures: see the module's durations in ``make test``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from tests.airflow_support import REPO, airflow_env, run_pipelines, wait_for
from tests.deployment.topology import Topology, celery_topology

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

NIGHTLY, FEATURES = "nightfeed_nightly", "nightfeed_features"
SHARD_TASK = "candidates_for_shard"
# The features DAG's scheduled run is for the latest complete day; the backfill takes the 3 days before.
LATEST = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
BACKFILL = [LATEST - dt.timedelta(days=n) for n in (3, 2, 1)]
TRAINED_ON = LATEST - dt.timedelta(days=4)
HISTORY_DAYS = 10
NUM_SHARDS = 4
SETTINGS = {
    "NIGHTFEED_CANDIDATES__NUM_SHARDS": str(NUM_SHARDS),
    "NIGHTFEED_CANDIDATES__TOP_N": "100",
    "NIGHTFEED_CANDIDATES__TOP_K": "20",
    # The cheapest served system: most popular over a week, nothing else tried.
    "NIGHTFEED_SELECTION__RETRIEVERS": '["most_popular"]',
    "NIGHTFEED_SELECTION__RANKERS": '["none"]',
    "NIGHTFEED_SELECTION__POPULARITY_WINDOWS": "[7]",
    "NIGHTFEED_SELECTION__MAX_ITEM_AGE_CHOICES": "[null]",
    "NIGHTFEED_SELECTION__DIVERSIFY_CHOICES": "[false]",
    "NIGHTFEED_SELECTION__WINDOW_DAYS": "2",
    "NIGHTFEED_SELECTION__MIN_EVAL_USERS": "10",
    "NIGHTFEED_SELECTION__RESAMPLES": "100",
}
# What the test shortens from airflow.env: one slot per worker, and a lost worker noticed in seconds.
TIMING = {
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "2",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
}


def history_and_champion(data_dir: Path) -> subprocess.Popen[str]:
    """World, feature history up to TRAINED_ON and a promoted champion, built by the CLI (background)."""
    start = TRAINED_ON - dt.timedelta(days=HISTORY_DAYS - 1)
    steps = [
        ["world", "--scale", "tiny", "--end-date", str(LATEST)],
        ["features", "--start", str(start), "--end", str(TRAINED_ON)],
        ["train", "--ds", str(TRAINED_ON)],
    ]
    script = " && ".join(" ".join([sys.executable, "-m", "pipelines", *args]) for args in steps)
    return subprocess.Popen(
        ["bash", "-c", script],
        env=airflow_env(data_dir.parent / "cli_home", data_dir, **SETTINGS),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def backfill(topology: Topology, dag_id: str, *flags: str) -> str:
    """``airflow backfill create`` of ``dag_id`` over the BACKFILL days; returns what it printed."""
    days = ["--from-date", str(BACKFILL[0]), "--to-date", str(BACKFILL[-1])]
    return topology.airflow("backfill", "create", "--dag-id", dag_id, *days, *flags).stdout


def runs(topology: Topology, dag_id: str) -> list[dict[str, Any]]:
    status, body = topology.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")
    assert status == 200, body
    return body["dag_runs"]


def shard_tries(topology: Topology, run_id: str) -> dict[int, list[dict[str, Any]]]:
    """Every try of every candidates shard of a nightly run, by map index."""
    base = f"/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances"
    status, body = topology.api("GET", f"{base}?task_id={SHARD_TASK}&limit=100")
    assert status == 200, body
    tries = {}
    for ti in body["task_instances"]:
        if ti["task_id"] == SHARD_TASK:
            status, answer = topology.api("GET", f"{base}/{SHARD_TASK}/{ti['map_index']}/tries")
            assert status == 200, answer
            tries[ti["map_index"]] = sorted(answer["task_instances"], key=lambda t: t["try_number"])
    return tries


def shards_done(topology: Topology, day: dt.date) -> bool:
    run = next((r for r in runs(topology, NIGHTLY) if r["logical_date"][:10] == str(day)), None)
    if run is None:
        return False
    base = f"/api/v2/dags/{NIGHTLY}/dagRuns/{run['dag_run_id']}/taskInstances"
    status, body = topology.api("GET", f"{base}?task_id={SHARD_TASK}&state=success&limit=100")
    return status == 200 and body["total_entries"] == NUM_SHARDS


def shard_state(topology: Topology, shard: dict[str, Any]) -> str | None:
    path = f"/api/v2/dags/{NIGHTLY}/dagRuns/{shard['run_id']}/taskInstances/{SHARD_TASK}/{shard['map_index']}"
    status, body = topology.api("GET", path)
    return body["state"] if status == 200 else None


def finished(topology: Topology, dag_id: str, count: int) -> list[dict[str, Any]] | None:
    done = [r for r in runs(topology, dag_id) if r["state"] in ("success", "failed")]
    return done if len(done) >= count else None


def lose_a_worker_mid_shard(topology: Topology, day: dt.date, timeout: float = 300) -> dict[str, Any]:
    """Wait for a shard of ``day``'s nightly run to be running; freeze its worker; if the shard is still
    running, kill the worker's whole process tree (else let it go on and wait for the next shard)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = next((r for r in runs(topology, NIGHTLY) if r["logical_date"][:10] == str(day)), None)
        if run:
            base = f"/api/v2/dags/{NIGHTLY}/dagRuns/{run['dag_run_id']}/taskInstances"
            status, body = topology.api("GET", f"{base}?task_id={SHARD_TASK}&state=running&limit=100")
            running = [t for t in body["task_instances"] if t.get("hostname")] if status == 200 else []
            if running:
                shard = running[0]
                tree = topology.freeze(shard["hostname"])
                path = f"{base}/{SHARD_TASK}/{shard['map_index']}"
                status, now = topology.api("GET", path)
                if status == 200 and now["state"] == "running" and now["try_number"] == shard["try_number"]:
                    topology.kill(tree)
                    return {"run_id": run["dag_run_id"], "map_index": shard["map_index"], **shard}
                for proc in tree:
                    proc.send_signal(signal.SIGCONT)
        time.sleep(0.2)
    raise AssertionError(f"no shard of the nightly run of {day} was caught running")


def published_rows(lake: Lake, day: dt.date) -> list[tuple[Any, ...]]:
    rows = []
    for path in lake.manifest_files(LakePaths.candidates(day)):
        table = lake.read_parquet(path, ["user_id", "rank", "item_id", "score", "reason"])
        rows.extend(tuple(row.values()) for row in table.to_pylist())
    return sorted(rows)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("topology")
    data_dir = base / "data"
    cli = history_and_champion(data_dir)
    with celery_topology(base / "airflow_home", data_dir, **SETTINGS, **TIMING) as topology:
        out, _ = cli.communicate(timeout=600)
        assert cli.returncode == 0, out[-4000:]
        facts: dict[str, Any] = {}
        for dag_id in (NIGHTLY, FEATURES):
            wait_for(lambda d=dag_id: topology.api("GET", f"/api/v2/dags/{d}")[0] == 200, 120, what=dag_id)
            status, body = topology.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            assert status == 200, body
        # Unpausing makes the scheduler run the features of LATEST, which start the nightly run of LATEST.
        # The backfill starts once its shards are done (both workers free), while the rest of it runs.
        wait_for(lambda: shards_done(topology, LATEST), 300, 3, "the shards of the scheduled nightly run")
        facts["dry_run"] = backfill(topology, NIGHTLY, "--dry-run")
        backfill(topology, FEATURES, "--max-active-runs", "1")  # one day after the other: nightlies in order
        facts["lost"] = lost = lose_a_worker_mid_shard(topology, BACKFILL[0])
        # Once its shard is done elsewhere the lost worker comes back, as compose's restart policy would.
        wait_for(lambda: shard_state(topology, lost) == "success", 300, 2, "the lost shard retried")
        topology.start_worker(lost["hostname"])
        wait_for(lambda: finished(topology, NIGHTLY, 1 + len(BACKFILL)), 600, 3, "the backfilled nightlies")
        facts["nightly_runs"] = runs(topology, NIGHTLY)
        facts["features_runs"] = runs(topology, FEATURES)
        facts["shards"] = {
            r["logical_date"][:10]: shard_tries(topology, r["dag_run_id"]) for r in facts["nightly_runs"]
        }
        facts["logs"] = {name: topology.log_tail(name, 3000) for name in topology.processes}
    yield {"lake": Lake(str(data_dir / "lake")), "data_dir": data_dir, "base": base, **facts}


def test_the_scheduled_nightly_ran_its_shards_on_both_workers(deployment: dict[str, Any]) -> None:
    latest = deployment["shards"][str(LATEST)]
    assert sorted(latest) == list(range(NUM_SHARDS))
    assert all(tries[-1]["state"] == "success" for tries in latest.values())
    assert {tries[-1]["hostname"] for tries in latest.values()} == {"worker-1", "worker-2"}
    # Started by the features run the scheduler made for LATEST (the nightly DAG has no clock of its own).
    run = next(r for r in deployment["nightly_runs"] if r["logical_date"][:10] == str(LATEST))
    assert run["run_type"] == "operator_triggered"
    features = next(r for r in deployment["features_runs"] if r["logical_date"][:10] == str(LATEST))
    assert features["run_type"] == "scheduled"
    assert deployment["lake"].is_published(LakePaths.candidates(LATEST))


def test_a_features_backfill_gets_one_nightly_run_per_day_in_date_order(deployment: dict[str, Any]) -> None:
    backfilled = [r for r in deployment["features_runs"] if r["run_type"] == "backfill"]
    assert sorted(r["logical_date"][:10] for r in backfilled) == [str(d) for d in BACKFILL]
    nightly = [r for r in deployment["nightly_runs"] if r["logical_date"][:10] != str(LATEST)]
    assert [r["logical_date"][:10] for r in nightly] == [str(d) for d in BACKFILL]
    assert {r["state"] for r in deployment["nightly_runs"]} == {"success"}, deployment["logs"]["scheduler"]
    # One at a time, in date order.
    starts = [r["start_date"] for r in nightly]
    assert starts == sorted(starts)
    for day in BACKFILL:
        manifest = deployment["lake"].read_manifest(LakePaths.candidates(day))
        assert len(manifest["files"]) == NUM_SHARDS


def test_the_nightly_dag_itself_can_be_backfilled(deployment: dict[str, Any]) -> None:
    listed = deployment["dry_run"]
    for day in BACKFILL:
        assert f"| {day} 00:00:00+00:00 |" in listed, listed
    assert f"| {LATEST} " not in listed


def test_a_shard_of_a_lost_worker_is_retried_on_the_other_worker(deployment: dict[str, Any]) -> None:
    lost = deployment["lost"]
    tries = deployment["shards"][str(BACKFILL[0])][lost["map_index"]]
    assert tries[0]["hostname"] == lost["hostname"] and tries[0]["state"] != "success"
    assert tries[-1]["state"] == "success"
    assert tries[-1]["hostname"] not in (None, lost["hostname"])


def test_the_lists_published_after_the_loss_equal_a_clean_run(deployment: dict[str, Any]) -> None:
    clean_dir = deployment["base"] / "clean"
    shutil.copytree(deployment["data_dir"], clean_dir)
    env = airflow_env(deployment["base"] / "cli", clean_dir, **SETTINGS)
    run_pipelines(["nightly", "--ds", str(BACKFILL[0])], env)
    clean = published_rows(Lake(str(clean_dir / "lake")), BACKFILL[0])
    assert clean, "the clean run published lists"
    assert published_rows(deployment["lake"], BACKFILL[0]) == clean
