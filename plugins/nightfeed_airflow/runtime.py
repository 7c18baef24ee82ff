"""How a Nightfeed task turns its Airflow context into a run of one job of ``pipelines.core.jobs``.

Every task body is ``run_job(<job>, **extra)``: this module works out the run date ``ds`` and the run
params from the context, runs the job and maps its failures onto Airflow's retry rules.

Which day a run processes (``ds``), first match wins:

1. the ``run_date`` param, when a manual run sets it;
2. the UTC calendar date of the run's logical date. The features DAG uses a data-interval timetable, so
   its run for a day starts after that day ends and its logical date is that day; it starts the nightly
   run of that day with the same logical date; the training DAG's logical date is the day before it
   fires (see each DAG's docs).

``pipelines.jobs`` is imported only inside :func:`call_job`, when a task runs: the DAG files import this
module at parse time and must stay free of TensorFlow, LightGBM, ScaNN and pandas. Only the job catalog
and the run params (standard library only) are read at parse time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, get_current_context
from airflow.sdk.exceptions import AirflowFailException

from pipelines.core.jobs import Job
from pipelines.core.params import RUN_DATE

if TYPE_CHECKING:
    from pipelines.core.lineage import Lineage

# Logical assets rather than file paths: the feature tables live in DuckDB or BigQuery and the models in
# the lake, depending on settings; consumers only need to know "features for ds are ready".
FEATURES = Asset(name="nightfeed_features", uri="nightfeed://features")
MODELS = Asset(name="nightfeed_models", uri="nightfeed://models")
CANDIDATES = Asset(name="nightfeed_candidates", uri="nightfeed://candidates")

DS_EXTRA_KEY = "ds"


def resolve_ds(context: Mapping[str, Any]) -> str:
    """The run date ``YYYY-MM-DD`` this run processes (rules in the module docstring).

    Raises:
        AirflowFailException: the run has neither a run_date param nor a logical date.
    """
    params = context.get("params") or {}
    run_date = params.get(RUN_DATE.name)
    if run_date:
        return _check_date(run_date, f"param {RUN_DATE.name}")

    logical_date = context.get("logical_date")
    if logical_date is not None:
        return logical_date.astimezone(dt.UTC).date().isoformat()
    raise AirflowFailException(
        "this run has no logical date and no run_date param to take ds from: "
        "trigger it with a logical date or with params {'run_date': 'YYYY-MM-DD'}"
    )


def _check_date(value: Any, origin: str) -> str:
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError as exc:
        raise AirflowFailException(f"{origin} must be a date like 2026-11-22, got {value!r}") from exc


def run_job(job: Job, **kwargs: Any) -> Any:
    """Run ``job`` for the current task's run (see :func:`call_job`), recording its lineage for the
    task's OpenLineage events (see :mod:`nightfeed_airflow.lineage`); every task of one DAG run holds the
    night's lease as that run."""
    from nightfeed_airflow.lineage import task_lineage

    context = get_current_context()
    params = context.get("params") or {}
    run = context.get("dag_run")
    holder = f"DAG run {run.dag_id}/{run.run_id}" if run is not None else None
    ds, lineage = resolve_ds(context), task_lineage(context)
    return call_job(job, ds, {key: params[key] for key in params}, lineage=lineage, holder=holder, **kwargs)


def call_job(
    job: Job,
    ds: str,
    params: Mapping[str, Any],
    lineage: Lineage | None = None,
    holder: str | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``job`` for ``ds`` with the run ``params``, the task's ``kwargs`` and the Google credentials
    of the ``google_cloud_default`` connection, if there is one (see :mod:`nightfeed_airflow.gcp`).

    Args:
        lineage: where the tables and datasets the job reads and writes are recorded (None: nowhere).
        holder: the night's lease holder (the DAG run); this process when None.

    Returns:
        What the job returns (a small JSON-serialisable value: it becomes the task's XCom).

    Raises:
        AirflowFailException: the job raised a ``PermanentError`` (bad data, no blessed model, bad
            params), or the connection's key is unusable, so retrying would not help; any other
            exception propagates and is retried.
    """
    from nightfeed_airflow.gcp import BadGcpConnection, connection_credentials
    from pipelines.core.errors import PermanentError
    from pipelines.jobs import run

    try:
        return run(job, ds, dict(params), connection_credentials(), lineage, holder=holder, **kwargs)
    except (PermanentError, BadGcpConnection) as exc:
        hint = getattr(exc, "hint", None)
        raise AirflowFailException(
            f"{job.name} for ds={ds} cannot succeed on retry: {exc}" + (f"; {hint}" if hint else "")
        ) from exc


def mark_outlet(asset: Asset, **extra: Any) -> None:
    """Attach ``extra`` (always including ``ds``) to the event the current task emits for ``asset``."""
    context = get_current_context()
    context["outlet_events"][asset].extra = {DS_EXTRA_KEY: resolve_ds(context), **extra}
