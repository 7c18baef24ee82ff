"""What every Nightfeed DAG shares: default task arguments, and typed ``Param``s built from the run
parameters declared in :mod:`pipelines.core.params` (``run_date`` first, in every DAG).

Imported by DAG files at parse time: Airflow and the standard-library catalog modules only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param

from nightfeed_airflow.alerts import FailureAlert
from pipelines.core.params import RUN_DATE, RunParam

NIGHTLY_DAG_ID = "nightfeed_nightly"
# The features DAG's last task: it starts the nightly run of its day (not a job: Airflow wiring only).
TRIGGER_NIGHTLY = "trigger_nightly"


def default_args(
    execution_timeout: dt.timedelta,
    retry_delay: dt.timedelta | None = None,
    max_retry_delay: dt.timedelta = dt.timedelta(minutes=30),
    **extra: Any,
) -> dict[str, Any]:
    """Task defaults: two retries with exponential backoff, a timeout on every task, an alert on failure.

    Args:
        execution_timeout: the longest a try may run.
        retry_delay: the wait before the first retry; None: Airflow's ``[core] default_task_retry_delay``
            (``airflow.env`` sets it for the deployment, a test shortens it).
        max_retry_delay: the longest wait between two tries.
        extra: further task arguments (a pool).

    Returns:
        The DAG's ``default_args``.
    """
    args: dict[str, Any] = {
        "owner": "nightfeed",
        "retries": 2,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "execution_timeout": execution_timeout,
        "on_failure_callback": [FailureAlert()],
        **extra,
    }
    if retry_delay is not None:
        args["retry_delay"] = retry_delay
    return args


def _param(param: RunParam) -> Param:
    schema: dict[str, Any] = {"title": param.title, "description": param.description}
    if param.kind == "boolean":
        return Param(param.default, type="boolean", **schema)
    if param.kind == "date":
        return Param(param.default, type=["null", "string"], format="date", **schema)
    bounds = {k: v for k, v in (("minimum", param.minimum), ("maximum", param.maximum)) if v is not None}
    return Param(param.default, type=["null", "integer"], **bounds, **schema)


def dag_params(*params: RunParam) -> dict[str, Param]:
    """The DAG's params: ``run_date`` and ``params``, each typed, titled and described."""
    return {param.name: _param(param) for param in (RUN_DATE, *params)}
