"""
### Nightfeed features

Builds the feature tables of one day `ds` from the raw tables (job `build_features`): quality
checks, quarantine of bad rows, staged tables, user/item features and the point-in-time training
examples. A day whose share of bad rows is above `quality.max_bad_fraction` fails without retries.

**Schedule.** Daily on a data-interval timetable: the run for 2026-11-22 starts just after 2026-11-23
00:00 UTC, when that day's events are complete, and processes `ds` = its logical date. Missed or old days
are rebuilt with a backfill (each run replaces its own `ds` partitions):
`airflow backfill create --dag-id nightfeed_features --from-date 2026-11-01 --to-date 2026-11-07`.

**Then** `trigger_nightly` starts the `nightfeed_nightly` run of the same day (logical date `ds`), so
every features run, scheduled or backfilled, gets its own nightly run; re-running the features of a day
re-runs that day's nightly. It also emits the `nightfeed://features` Asset with `extra={"ds": ...}`.

**Manual runs.** `run_date` overrides the day; otherwise the logical date's UTC day is used.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, dag, task
from nightfeed_airflow.alerts import FailureAlert
from nightfeed_airflow.dag_support import NIGHTLY_DAG_ID, TRIGGER_NIGHTLY, dag_params, default_args
from nightfeed_airflow.runtime import FEATURES, mark_outlet, run_job

from pipelines.core import jobs


@dag(
    dag_id="nightfeed_features",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(execution_timeout=dt.timedelta(hours=1)),
    on_failure_callback=FailureAlert(),
    tags=["nightfeed", "features"],
    params=dag_params(),
)
def nightfeed_features():
    @task(task_id=jobs.BUILD_FEATURES.name, outlets=[FEATURES])
    def build_features() -> dict:
        """Run the feature SQL for ds and announce the day on the features Asset."""
        report = run_job(jobs.BUILD_FEATURES)
        mark_outlet(FEATURES)
        return report

    build_features() >> TriggerDagRunOperator(
        task_id=TRIGGER_NIGHTLY,
        trigger_dag_id=NIGHTLY_DAG_ID,
        logical_date="{{ params.run_date or ds }}",
        reset_dag_run=True,
    )


nightfeed_features()
