"""
### Nightfeed freshness
Fails loudly when users would get stale feeds (job `check_freshness`): the newest published candidates
and digests must be for a day at most `freshness.max_age_days` (default 1) before `ds`. A night that
failed, was skipped or is still running past the check leaves them older; the failed task alerts like any
other (see "Alerts and freshness" in the README).

**Schedule.** Daily at 06:00 UTC, a few hours after the nightly run of the day before usually publishes;
`ds` is the day the check runs, so yesterday's outputs are one day old.

**Manual runs.** `run_date` checks as of another day.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, dag, task
from nightfeed_airflow.alerts import FailureAlert
from nightfeed_airflow.dag_support import dag_params, default_args
from nightfeed_airflow.runtime import run_job

from pipelines.core import jobs


@dag(
    dag_id="nightfeed_freshness",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(execution_timeout=dt.timedelta(minutes=10)),
    on_failure_callback=FailureAlert(),
    tags=["nightfeed", "monitoring"],
    params=dag_params(),
)
def nightfeed_freshness():
    @task(task_id=jobs.CHECK_FRESHNESS.name)
    def check_freshness() -> dict:
        """Fail when the newest published candidates or digests are older than allowed."""
        return run_job(jobs.CHECK_FRESHNESS)

    check_freshness()


nightfeed_freshness()
