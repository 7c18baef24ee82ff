"""The nightly chain of the serving tests on a tiny world: its run date and sizes, one run of the serving
jobs and of the digest jobs, and the published lists with their inputs as data frames."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from pipelines.core import jobs
from pipelines.core.lake import Lake
from pipelines.jobs import run
from pipelines.serving.inputs import read_input
from pipelines.serving.shards import read_candidates

DS = dt.date(2026, 11, 22)
TOP_K = 20
SHARDS = 2


def run_nightly(ds: dt.date = DS, params: dict[str, Any] | None = None) -> dict[str, Any]:
    for job in (jobs.EXPORT_INPUTS, jobs.EMBED_ITEMS, jobs.BUILD_INDEX):
        run(job, ds, params)
    plan = run(jobs.PLAN_SHARDS, ds, params)
    results = [run(jobs.CANDIDATES_FOR_SHARD, ds, params, **p) for p in plan]
    return run(jobs.PUBLISH_CANDIDATES, ds, params, staging=plan[0]["staging"], shard_results=results)


def run_digests(ds: dt.date = DS) -> dict[str, Any]:
    plan = run(jobs.PLAN_DIGESTS, ds)
    rendered = [run(jobs.RENDER_DIGESTS, ds, **p) for p in plan]
    return run(jobs.PUBLISH_DIGESTS, ds, staging=plan[0]["staging"], shard_results=rendered)


def frames(lake: Lake) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (
        read_candidates(lake, DS).to_pandas(),
        read_input(lake, DS, "users").to_pandas(),
        read_input(lake, DS, "items").to_pandas(),
        read_input(lake, DS, "seen").to_pandas(),
    )
