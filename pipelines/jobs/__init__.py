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
    holder: str | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``job`` for ``ds`` with the run ``params`` (DAG params or CLI flags) and job ``kwargs``.

    Args:
        credentials: the Google credentials of the lake and BigQuery (None: application-default).
        lineage: where the tables and datasets the job reads and writes are recorded (None: nowhere).
        holder: the night's lease holder, the same for every task of one DAG run (this process if None).

    Raises:
        pipelines.core.errors.PermanentError: the run cannot succeed on retry (the message says why).
        pipelines.core.night.NightBusyError: another run holds the lease of the night ``job`` writes.
    """
    from pipelines.core.context import RunContext

    return run_in(RunContext.create(ds, params, credentials, lineage, holder=holder), job, **kwargs)


def run_in(ctx: RunContext, job: Job, **kwargs: Any) -> Any:
    """Run ``job`` in an existing context (a CLI command running several jobs of one date).

    A job that writes a night takes or renews the night's lease first; the job that closes the night
    writes the night manifest and releases the lease after it succeeded.
    """
    from pipelines.core import night

    log.info("%s ds=%s %s", job.name, ctx.ds, kwargs or "")
    minutes = ctx.settings.night_lease_minutes
    if job.night is not None:
        night.hold(ctx.lake, ctx.ds, ctx.holder, minutes)
    result = job.function()(ctx, **kwargs)
    if job.records_fact:  # a dry run's lake keeps its facts in its scratch folder
        ctx.record_fact(job.name, result)
    if job.night == "close":
        night.close(ctx.lake, ctx.ds, ctx.holder, minutes)
    return result
