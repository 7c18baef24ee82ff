"""Job implementations, one module per stage, and :func:`run`, the one way a job is run.

``run(job, ds, params)`` builds the :class:`~pipelines.core.context.RunContext` once, calls the job's
function and keeps its result as a fact for the run report when the catalog says so. Failures a retry
cannot fix are :class:`~pipelines.core.errors.PermanentError` (every domain error derives from it); the
Airflow runtime and the command line each map it in one place. Job modules import heavy libraries inside
their functions, so importing a job module is cheap.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext
    from pipelines.core.jobs import Job
    from pipelines.core.lineage import Lineage

log = logging.getLogger(__name__)


def run(
    job: Job,
    ds: str | dt.date,
    params: Mapping[str, Any] | None = None,
    credentials: Any | None = None,
    lineage: Lineage | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``job`` for ``ds`` with the run ``params`` (DAG params or CLI flags) and job ``kwargs``;
    ``credentials`` are the Google credentials of the lake and BigQuery (None: application-default), and
    the tables and datasets the job reads and writes are recorded in ``lineage`` when one is given.

    Raises:
        pipelines.core.errors.PermanentError: the run cannot succeed on retry (the message says why).
    """
    from pipelines.core.context import RunContext

    return run_in(RunContext.create(ds, params, credentials, lineage), job, **kwargs)


def run_in(ctx: RunContext, job: Job, **kwargs: Any) -> Any:
    """Run ``job`` in an existing context (a CLI command running several jobs of one date)."""
    log.info("%s ds=%s %s", job.name, ctx.ds, kwargs or "")
    result = job.function()(ctx, **kwargs)
    if job.records_fact and not (isinstance(result, dict) and result.get("dry_run")):
        ctx.record_fact(job.name, result)
    return result
