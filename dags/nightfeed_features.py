"""
### Nightfeed features

Builds the feature tables of one day `ds` from the raw tables (`pipelines.jobs.run_features`): quality
checks, quarantine of bad rows, staged tables, user/item features and the point-in-time training
examples. A day whose share of bad rows is above `quality.max_bad_fraction` fails without retries.

**Schedule.** Daily on a data-interval timetable: the run for 2026-11-22 starts just after 2026-11-23
00:00 UTC, when that day's events are complete, and processes `ds` = its logical date. Missed or old days
are rebuilt with a backfill (each run replaces its own `ds` partitions):
`airflow backfill create --dag-id nightfeed_features --from-date 2026-11-01 --to-date 2026-11-07`.

**Emits** the `nightfeed://features` Asset with `extra={"ds": ...}`; the nightly candidates DAG is
scheduled on it.

**Manual runs.** `run_date` overrides the day; otherwise the logical date's UTC day is used.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from nightfeed_airflow.runtime import FEATURES, mark_outlet, run_job

DEFAULT_ARGS = {
    "owner": "nightfeed",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
    "execution_timeout": dt.timedelta(hours=1),
}


@dag(
    dag_id="nightfeed_features",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightfeed", "features"],
    params={
        "run_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Run date",
            description="Day to build (YYYY-MM-DD). Empty: the run's logical date.",
        ),
    },
)
def nightfeed_features():
    @task(outlets=[FEATURES])
    def features() -> dict:
        """Run the feature SQL for ds and announce the day on the features Asset."""
        report = run_job("run_features")
        mark_outlet(FEATURES)
        return report

    features()


nightfeed_features()
