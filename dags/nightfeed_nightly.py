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

**Schedule.** On the `nightfeed://features` Asset: it runs when the features of a day are done and
processes the `ds` carried by that event (the newest one when several days arrived together).
`max_active_runs=1` because it publishes.

**Manual runs.** `run_date` picks the day (required when the run has no logical date); `num_shards`,
`top_k` and `dry_run_users` override the settings for this run only; empty means "as configured".
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from nightfeed_airflow.runtime import CANDIDATES, FEATURES, mark_outlet, run_job

DEFAULT_ARGS = {
    "owner": "nightfeed",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
    "execution_timeout": dt.timedelta(hours=2),
}


@dag(
    dag_id="nightfeed_nightly",
    doc_md=__doc__,
    schedule=[FEATURES],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["nightfeed", "serving"],
    params={
        "run_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Run date",
            description="Day to serve (YYYY-MM-DD). Empty: the day of the triggering features event, "
            "or the run's logical date.",
        ),
        "num_shards": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=256,
            title="User shards",
            description="Mapped candidate tasks for this run (1-256). Empty: candidates.num_shards.",
        ),
        "top_k": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1000,
            title="Candidates per user",
            description="Published candidates per user (1-1000). Empty: candidates.top_k.",
        ),
        "dry_run_users": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Dry-run user sample",
            description="Score only a seeded sample of this many users. Empty: every user.",
        ),
        "skip_digests": Param(
            False,
            type="boolean",
            title="Skip digests",
            description="Publish candidates but render no digest e-mails.",
        ),
    },
)
def nightfeed_nightly():
    @task
    def export_inputs() -> dict:
        return run_job("export_inputs")

    @task
    def embed_items() -> dict:
        return run_job("embed_items")

    @task
    def build_index() -> dict:
        return run_job("build_index")

    @task
    def plan_shards() -> list[dict]:
        return run_job("plan_shards")

    @task(map_index_template="{{ shard_label }}")
    def candidates_for_shard(shard: int, num_shards: int, staging: str) -> dict:
        get_current_context()["shard_label"] = f"shard {shard:03d} of {num_shards}"
        return run_job("candidates_for_shard", shard=shard, num_shards=num_shards, staging=staging)

    @task(outlets=[CANDIDATES])
    def publish_candidates(plan: list[dict], shard_results: list[dict]) -> dict:
        result = run_job("publish_candidates", staging=plan[0]["staging"], shard_results=list(shard_results))
        mark_outlet(CANDIDATES)
        return result

    @task
    def plan_digests() -> list[dict]:
        if get_current_context()["params"]["skip_digests"]:
            raise AirflowSkipException("skip_digests is set for this run")
        return run_job("plan_digests")

    @task(map_index_template="{{ shard_label }}")
    def render_digests(shard: int, num_shards: int, staging: str | None) -> dict:
        get_current_context()["shard_label"] = f"shard {shard:03d} of {num_shards}"
        return run_job("render_digest_shard", shard=shard, num_shards=num_shards, staging=staging)

    @task
    def publish_digests(digest_plan: list[dict], shard_results: list[dict]) -> dict:
        return run_job(
            "publish_digests", staging=digest_plan[0]["staging"], shard_results=list(shard_results)
        )

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def write_report() -> dict:
        return run_job("write_report")

    plan = plan_shards()
    shards = candidates_for_shard.expand_kwargs(plan)
    export_inputs() >> embed_items() >> build_index() >> plan
    digest_plan = plan_digests()
    publish_candidates(plan, shards) >> digest_plan
    publish_digests(digest_plan, render_digests.expand_kwargs(digest_plan)) >> write_report()


nightfeed_nightly()
