"""Each DAG's task graph, schedule, pools, outlets and params are the ones its docs describe."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.airflow

FEATURES_URI = "nightfeed://features/"
ALL_DAGS = ["nightfeed_features", "nightfeed_training", "nightfeed_nightly", "nightfeed_freshness"]


@pytest.fixture(scope="module")
def dags(described: dict[str, dict]) -> dict[str, dict]:
    return {stem: info["dags"][stem] for stem, info in described.items()}


def edges(dag: dict) -> set[tuple[str, str]]:
    return {(task_id, down) for task_id, task in dag["tasks"].items() for down in task["downstream"]}


def test_features_dag(dags: dict[str, dict]) -> None:
    dag = dags["nightfeed_features"]
    assert edges(dag) == {("build_features", "trigger_nightly")}
    # Each features run starts the nightly run of its own day; a rerun of the day re-runs that nightly.
    assert dag["tasks"]["trigger_nightly"]["trigger"] == {
        "dag_id": "nightfeed_nightly",
        "logical_date": "{{ params.run_date or ds }}",
        "reset_dag_run": True,
    }
    assert dag["tasks"]["build_features"]["outlets"] == [FEATURES_URI]
    # Data-interval timetable: the run for a day has that day as logical date (see the DAG's docs).
    assert dag["timetable"] == "CronDataIntervalTimetable"
    assert dag["timetable_config"]["expression"] == "0 0 * * *"
    assert dag["timetable_config"]["timezone"] == "UTC"
    assert set(dag["params"]) == {"run_date"}


def test_training_dag(dags: dict[str, dict]) -> None:
    dag = dags["nightfeed_training"]
    assert set(dag["tasks"]) == {"train_system"} and edges(dag) == set()
    assert {task["pool"] for task in dag["tasks"].values()} == {"nightfeed_training"}
    assert dag["timetable"] == "CronTriggerTimetable"
    # Sundays 03:00 UTC; the one-day interval makes the logical date (and so ds) the Saturday.
    assert dag["timetable_config"]["expression"] == "0 3 * * 0"
    assert dag["timetable_config"]["interval"] == 86400.0
    assert dag["max_active_runs"] == 1
    assert set(dag["params"]) == {"run_date", "force_retrain"}
    assert dag["param_defaults"]["force_retrain"] is False


def test_nightly_dag(dags: dict[str, dict]) -> None:
    dag = dags["nightfeed_nightly"]
    assert edges(dag) == {
        ("export_inputs", "embed_items"),
        ("embed_items", "build_index"),
        ("build_index", "plan_shards"),
        ("plan_shards", "candidates_for_shard"),
        ("plan_shards", "publish_candidates"),
        ("candidates_for_shard", "publish_candidates"),
        ("publish_candidates", "plan_digests"),
        ("plan_digests", "render_digests"),
        ("plan_digests", "publish_digests"),
        ("render_digests", "publish_digests"),
        ("publish_digests", "write_report"),
    }
    mapped = {task_id for task_id, task in dag["tasks"].items() if task["mapped"]}
    assert mapped == {"candidates_for_shard", "render_digests"}
    # Daily intervals (so it can be backfilled), but the scheduler makes no run: the features run does.
    assert dag["timetable"] == "FeaturesDays"
    assert dag["timetable_summary"] == "after nightfeed_features"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    # The report is written whether or not digests were skipped, but not after a failure.
    assert dag["tasks"]["write_report"]["trigger_rule"] == "none_failed"
    assert dag["tasks"]["publish_candidates"]["outlets"] == ["nightfeed://candidates/"]
    assert set(dag["params"]) == {
        "run_date",
        "num_shards",
        "top_k",
        "dry_run_users",
        "use_current_system",
        "skip_digests",
    }
    assert dag["param_defaults"]["use_current_system"] is False


def test_freshness_dag(dags: dict[str, dict]) -> None:
    dag = dags["nightfeed_freshness"]
    assert set(dag["tasks"]) == {"check_freshness"} and edges(dag) == set()
    # Daily at 06:00 UTC with no interval: the logical date, and so ds, is the day the check runs.
    assert dag["timetable"] == "CronTriggerTimetable"
    assert dag["timetable_config"]["expression"] == "0 6 * * *"
    assert dag["timetable_config"]["interval"] == 0.0
    assert set(dag["params"]) == {"run_date"}


@pytest.mark.parametrize("stem", ALL_DAGS)
def test_every_task_and_run_alerts_on_failure(dags: dict[str, dict], stem: str) -> None:
    assert dags[stem]["on_failure_callback"] == ["FailureAlert"]
    for task_id, task in dags[stem]["tasks"].items():
        assert task["on_failure_callback"] == ["FailureAlert"], task_id


@pytest.mark.parametrize("stem", ALL_DAGS)
def test_params_have_titles_descriptions_and_types(dags: dict[str, dict], stem: str) -> None:
    for name, schema in dags[stem]["params"].items():
        assert schema.get("title") and schema.get("description"), name
        assert schema.get("type"), name


@pytest.mark.parametrize("stem", ALL_DAGS)
def test_every_task_is_a_job_of_the_catalog_or_a_trigger(dags: dict[str, dict], stem: str) -> None:
    from pipelines.core.jobs import JOBS

    wiring = {task_id for task_id, task in dags[stem]["tasks"].items() if task["trigger"]}
    assert wiring <= {"trigger_nightly"}
    assert set(dags[stem]["tasks"]) - wiring <= {job.name for job in JOBS}


@pytest.mark.parametrize("stem", ALL_DAGS)
def test_params_are_the_declared_run_params(dags: dict[str, dict], stem: str) -> None:
    from pipelines.core.params import RUN_PARAMS

    declared = {param.name: param for param in RUN_PARAMS}
    for name, schema in dags[stem]["params"].items():
        param = declared[name]
        assert schema["title"] == param.title and schema["description"] == param.description
        assert schema.get("minimum") == param.minimum and schema.get("maximum") == param.maximum
