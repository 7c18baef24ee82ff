"""
### Nightfeed training

Chooses the system the nightly job serves (`train_system`). Candidate systems (two-tower variants with or
without a LightGBM ranker, most popular, item-kNN and ALS, each with an age limit and diversification or
not) are trained on the data before past nights and their lists replayed exactly as served; the best on
the validation nights is checked on a later test night against the tuned baselines and the champion
(paired bootstrap intervals) and promoted only if it does not lose. A candidate that is not promoted is a
successful task (`promoted: false` and the reason in its XCom) and the champion stays.

**Schedule.** Weekly, Sundays 03:00 UTC, after Saturday's features; the run's logical date is the start
of the one-day interval before it fires, so it trains on data up to `ds` = Saturday. Also run on demand.
The task runs in the pool `nightfeed_training` (one slot), so training never competes with itself:
`airflow pools set nightfeed_training 1 "Nightfeed model training: one at a time"`.

**Manual runs.** `run_date` picks the last day of training data; `force_retrain` trains even when the
champion was trained on the same data.

**Emits** the `nightfeed://models` Asset after each task, with the model version and whether it was
promoted.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, dag, task
from nightfeed_airflow.alerts import FailureAlert
from nightfeed_airflow.dag_support import dag_params, default_args
from nightfeed_airflow.runtime import MODELS, mark_outlet, run_job

from pipelines.core import jobs
from pipelines.core.params import FORCE_RETRAIN

TRAINING_POOL = "nightfeed_training"


@dag(
    dag_id="nightfeed_training",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("0 3 * * 0", timezone="UTC", interval=dt.timedelta(days=1)),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(
        execution_timeout=dt.timedelta(hours=4),
        retry_delay=dt.timedelta(minutes=5),
        max_retry_delay=dt.timedelta(hours=1),
        pool=TRAINING_POOL,
    ),
    on_failure_callback=FailureAlert(),
    tags=["nightfeed", "training"],
    params=dag_params(FORCE_RETRAIN),
)
def nightfeed_training():
    @task(task_id=jobs.TRAIN_SYSTEM.name, outlets=[MODELS])
    def train_system() -> dict:
        """Replay candidate systems on past nights and promote the one that wins the gate."""
        result = run_job(jobs.TRAIN_SYSTEM)
        mark_outlet(MODELS, model="system", version=result["version"], promoted=result["promoted"])
        return {key: result[key] for key in ("version", "promoted", "reason")}

    train_system()


nightfeed_training()
