"""OpenLineage events for real: the features DAG of a tiny world through ``airflow dags test`` with the
OpenLineage provider's file transport and Nightfeed's extractor (as ``airflow.env`` registers it); the
build_features task's COMPLETE event names the raw tables it read, the feature tables it wrote and the
quarantine dataset it published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_support import airflow_env, dags_test, prepare_home, run_pipelines
from tests.deployment.topology import ENV_FILE, read_env_file

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DS = "2026-11-20"


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    base = tmp_path_factory.mktemp("lineage")
    data_dir, events_file = base / "data", base / "openlineage.jsonl"
    env = airflow_env(
        prepare_home(base / "airflow_home"),
        data_dir,
        AIRFLOW__OPENLINEAGE__EXTRACTORS=read_env_file(ENV_FILE)["AIRFLOW__OPENLINEAGE__EXTRACTORS"],
        AIRFLOW__OPENLINEAGE__NAMESPACE="nightfeed-test",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
    )
    run_pipelines(["world", "--scale", "tiny", "--end-date", DS], env)
    run = dags_test(env, "nightfeed_features", DS)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert events_file.exists(), run.stdout[-4000:]
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def task_event(events: list[dict[str, Any]], job: str, state: str) -> dict[str, Any]:
    matching = [e for e in events if e["job"]["name"] == job and e["eventType"] == state]
    assert matching, sorted({(e["job"]["name"], e["eventType"]) for e in events})
    return matching[-1]


def test_the_features_task_names_the_tables_it_read_and_wrote(events: list[dict[str, Any]]) -> None:
    complete = task_event(events, "nightfeed_features.build_features", "COMPLETE")
    inputs = {(d["namespace"].split("://")[0], d["name"]) for d in complete["inputs"]}
    outputs = {(d["namespace"].split("://")[0], d["name"]) for d in complete["outputs"]}
    assert {("duckdb", f"main.{table}") for table in ("raw_events", "raw_items", "raw_users")} <= inputs
    assert {("duckdb", "main.user_features"), ("duckdb", "main.item_features")} <= outputs
    assert not {name for _, name in outputs} & {"main.raw_events", "main.raw_items", "main.raw_users"}


def test_the_lake_datasets_are_named_by_path(events: list[dict[str, Any]], tmp_path: Path) -> None:
    complete = task_event(events, "nightfeed_features.build_features", "COMPLETE")
    lake_outputs = [d["name"] for d in complete["outputs"] if d["namespace"] == "file"]
    assert any(name.endswith(f"/lake/quarantine/ds={DS}") for name in lake_outputs), lake_outputs
