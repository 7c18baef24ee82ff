"""The catalog of jobs: every unit of work a DAG task or a CLI command runs, declared once.

A :class:`Job` names its implementation, ``pipelines.jobs.<stage>.<name>(ctx, **kwargs)``, which gets a
:class:`pipelines.core.context.RunContext` and returns a small JSON-ready value (the task's XCom). DAG
tasks, CLI commands and the run report refer to these objects, never to a name typed again; a test
checks that every job here resolves to its function and that every job function is here.

This module imports nothing but the standard library: DAG files read it at parse time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Job:
    """One job: ``name`` is also its DAG task id and the name of the fact it records.

    Attributes:
        name: the job's name; its function is ``pipelines.jobs.<stage>.<name>``.
        stage: the module of ``pipelines.jobs`` that implements it.
        summary: one line for DAG docs, ``--help`` and logs.
        records_fact: whether its result is kept for the run report (``reports/ds=…/facts/<name>.json``).
        night: ``"write"`` if it writes the datasets of a night (it holds the night's lease),
            ``"close"`` if it ends the night (writes the night manifest and releases the lease).
    """

    name: str
    stage: str
    summary: str
    records_fact: bool = False
    night: Literal["write", "close"] | None = None

    def function(self) -> Callable[..., Any]:
        """The implementation, imported on first use (so the catalog itself stays light)."""
        return getattr(importlib.import_module(f"pipelines.jobs.{self.stage}"), self.name)


BUILD_FEATURES = Job(
    "build_features", "features", "feature SQL of ds, quality gate and quarantine", records_fact=True
)
TRAIN_SYSTEM = Job(
    "train_system",
    "training",
    "train candidate systems on past nights, replay their lists, promote the one that wins the gate",
    records_fact=True,
)
EXPORT_INPUTS = Job(
    "export_inputs", "nightly", "snapshot the serving inputs of ds", records_fact=True, night="write"
)
EMBED_ITEMS = Job(
    "embed_items",
    "nightly",
    "embed the catalog with the two-tower champion",
    records_fact=True,
    night="write",
)
BUILD_INDEX = Job(
    "build_index", "nightly", "build and recall-check the ScaNN index", records_fact=True, night="write"
)
PLAN_SHARDS = Job(
    "plan_shards", "nightly", "open the candidates staging folder, one item per shard", night="write"
)
CANDIDATES_FOR_SHARD = Job(
    "candidates_for_shard", "nightly", "compute one shard's candidate lists", night="write"
)
PUBLISH_CANDIDATES = Job(
    "publish_candidates",
    "nightly",
    "publish every shard's candidates, manifest last",
    records_fact=True,
    night="write",
)
PLAN_DIGESTS = Job(
    "plan_digests", "digests", "open the digests staging folder, one item per shard", night="write"
)
RENDER_DIGESTS = Job(
    "render_digests", "digests", "render one candidates shard's digest e-mails", night="write"
)
PUBLISH_DIGESTS = Job(
    "publish_digests",
    "digests",
    "publish every shard's digests, manifest last",
    records_fact=True,
    night="write",
)
WRITE_REPORT = Job("write_report", "report", "build and publish the run report of ds", night="close")
CHECK_FRESHNESS = Job(
    "check_freshness", "freshness", "fail when the newest published candidates or digests are too old"
)

JOBS: tuple[Job, ...] = (
    BUILD_FEATURES,
    TRAIN_SYSTEM,
    EXPORT_INPUTS,
    EMBED_ITEMS,
    BUILD_INDEX,
    PLAN_SHARDS,
    CANDIDATES_FOR_SHARD,
    PUBLISH_CANDIDATES,
    PLAN_DIGESTS,
    RENDER_DIGESTS,
    PUBLISH_DIGESTS,
    WRITE_REPORT,
    CHECK_FRESHNESS,
)
# The jobs whose facts make up a full night's report, in the order they run.
NIGHT_FACTS: tuple[Job, ...] = tuple(job for job in JOBS if job.records_fact)
