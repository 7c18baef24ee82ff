"""
### Nightfeed nightly candidates

Turns the day's features and the champion models into published per-user candidate lists, digest
e-mails and a run report:

1. `export_inputs`: the day's users and items from the warehouse to the lake;
2. `embed_items`: item embeddings from the two-tower champion;
3. `build_index`: the ScaNN index, with a recall check against brute force;
4. `plan_shards`: the user shards and one staging folder for this run;
5. `candidates_for_shard`: one mapped task per shard (spread over workers by Celery/Kubernetes):
   user tower, ScaNN top-N, filters, LightGBM ranking, diversification, top-K, written to staging;
6. `publish_candidates`: checks every shard and publishes them atomically (manifest last);
7. `plan_digests` → `render_digests` (one mapped task per candidates shard) → `publish_digests`: digest
   e-mails of the users due, from the published candidates, published atomically (all three skipped with
   `skip_digests`);
8. `write_report`: metrics and plots of the run.

**Schedule.** One run per day, never on a clock: the `nightfeed_features` run of a day starts the
nightly run of that day (logical date `ds`) when the features are built, so each features run, scheduled
or backfilled, gets its own nightly run. Queued runs start in date order, one at a time
(`max_active_runs=1`, because it publishes). The days are daily intervals, so the DAG can be backfilled
itself: `airflow backfill create --dag-id nightfeed_nightly --from-date 2026-11-01 --to-date 2026-11-07`.

**Manual runs.** `run_date` picks the day (required when the run has no logical date); `num_shards`,
`top_k` and `dry_run_users` override the settings for this run only; empty means "as configured".
A night serves the system in force on its day (the latest promotion trained on data up to it), so a
backfilled or re-run night is served as it was; `use_current_system` serves the current champion.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from nightfeed_airflow.alerts import FailureAlert
from nightfeed_airflow.dag_support import dag_params, default_args
from nightfeed_airflow.runtime import CANDIDATES, mark_outlet, run_job
from nightfeed_airflow.timetables import FeaturesDays

from pipelines.core import jobs
from pipelines.core.params import DRY_RUN_USERS, NUM_SHARDS, SKIP_DIGESTS, TOP_K, USE_CURRENT_SYSTEM


@dag(
    dag_id="nightfeed_nightly",
    doc_md=__doc__,
    schedule=FeaturesDays(),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(execution_timeout=dt.timedelta(hours=2)),
    on_failure_callback=FailureAlert(),
    tags=["nightfeed", "serving"],
    params=dag_params(NUM_SHARDS, TOP_K, DRY_RUN_USERS, USE_CURRENT_SYSTEM, SKIP_DIGESTS),
)
def nightfeed_nightly():
    @task(task_id=jobs.EXPORT_INPUTS.name)
    def export_inputs() -> dict:
        return run_job(jobs.EXPORT_INPUTS)

    @task(task_id=jobs.EMBED_ITEMS.name)
    def embed_items() -> dict:
        return run_job(jobs.EMBED_ITEMS)

    @task(task_id=jobs.BUILD_INDEX.name)
    def build_index() -> dict:
        return run_job(jobs.BUILD_INDEX)

    @task(task_id=jobs.PLAN_SHARDS.name)
    def plan_shards() -> list[dict]:
        return run_job(jobs.PLAN_SHARDS)

    @task(task_id=jobs.CANDIDATES_FOR_SHARD.name, map_index_template="{{ shard_label }}")
    def candidates_for_shard(shard: int, num_shards: int, staging: str) -> dict:
        get_current_context()["shard_label"] = f"shard {shard:03d} of {num_shards}"
        return run_job(jobs.CANDIDATES_FOR_SHARD, shard=shard, num_shards=num_shards, staging=staging)

    @task(task_id=jobs.PUBLISH_CANDIDATES.name, outlets=[CANDIDATES])
    def publish_candidates(plan: list[dict], shard_results: list[dict]) -> dict:
        result = run_job(
            jobs.PUBLISH_CANDIDATES, staging=plan[0]["staging"], shard_results=list(shard_results)
        )
        mark_outlet(CANDIDATES)
        return result

    @task(task_id=jobs.PLAN_DIGESTS.name)
    def plan_digests() -> list[dict]:
        if get_current_context()["params"][SKIP_DIGESTS.name]:
            raise AirflowSkipException(f"{SKIP_DIGESTS.name} is set for this run")
        return run_job(jobs.PLAN_DIGESTS)

    @task(task_id=jobs.RENDER_DIGESTS.name, map_index_template="{{ shard_label }}")
    def render_digests(shard: int, num_shards: int, staging: str | None) -> dict:
        get_current_context()["shard_label"] = f"shard {shard:03d} of {num_shards}"
        return run_job(jobs.RENDER_DIGESTS, shard=shard, num_shards=num_shards, staging=staging)

    @task(task_id=jobs.PUBLISH_DIGESTS.name)
    def publish_digests(digest_plan: list[dict], shard_results: list[dict]) -> dict:
        return run_job(
            jobs.PUBLISH_DIGESTS, staging=digest_plan[0]["staging"], shard_results=list(shard_results)
        )

    @task(task_id=jobs.WRITE_REPORT.name, trigger_rule=TriggerRule.NONE_FAILED)
    def write_report() -> dict:
        return run_job(jobs.WRITE_REPORT)

    plan = plan_shards()
    shards = candidates_for_shard.expand_kwargs(plan)
    export_inputs() >> embed_items() >> build_index() >> plan
    digest_plan = plan_digests()
    publish_candidates(plan, shards) >> digest_plan
    publish_digests(digest_plan, render_digests.expand_kwargs(digest_plan)) >> write_report()


nightfeed_nightly()
