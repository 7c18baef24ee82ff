"""One function per DAG task: the seam between Airflow (or the CLI) and the stage modules.

Every job takes the run date ``ds`` and per-run ``overrides`` (nested settings built from DAG params by
:func:`overrides_from_params`), opens what it needs from the settings, calls one stage's entry function
and returns a small JSON-serialisable dict (it becomes the task's XCom). Heavy libraries are imported
inside the jobs, so importing this module is cheap.

Failures a retry cannot fix raise :class:`PermanentFailure`; anything else is treated as transient.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.schema import check_ds
from pipelines.settings import Settings, load_settings

log = logging.getLogger(__name__)


class PermanentFailure(RuntimeError):
    """A failure a retry cannot fix: bad data above the threshold, no blessed model, bad parameters."""


# DAG param name -> (settings section, field). The one place params become settings.
PARAM_TO_SETTING: dict[str, tuple[str, ...]] = {
    "num_shards": ("candidates", "num_shards"),
    "top_k": ("candidates", "top_k"),
    "dry_run_users": ("dry_run_users",),
}


def overrides_from_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Nested settings overrides from a DAG run's params (unset or None params are left out)."""
    overrides: dict[str, Any] = {}
    for name, path in PARAM_TO_SETTING.items():
        value = (params or {}).get(name)
        if value is None:
            continue
        target = overrides
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return overrides


def settings_for(overrides: dict[str, Any] | None) -> Settings:
    """Settings from the environment with the run's overrides applied.

    Raises:
        PermanentFailure: an override is unknown or out of range.
    """
    from pydantic import ValidationError

    try:
        return load_settings().with_overrides(overrides)
    except ValidationError as exc:
        raise PermanentFailure(f"invalid run parameters: {exc}") from exc


def run_features(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the feature tables of ``ds`` (quality gate included)."""
    from pipelines.features import DataQualityError, build_features
    from pipelines.lake import Lake
    from pipelines.warehouse import open_warehouse

    ds = check_ds(ds)
    settings = settings_for(overrides)
    with open_warehouse(settings) as warehouse:
        try:
            report = build_features(warehouse, Lake(settings.lake_url), ds, settings)
        except DataQualityError as exc:
            raise PermanentFailure(str(exc)) from exc
    return report.to_dict()


def describe_outputs(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the outputs of ``ds`` are, and whether each is published."""
    from pipelines.lake import Lake
    from pipelines.schema import LakePaths

    ds = check_ds(ds)
    settings = settings_for(overrides)
    lake = Lake(settings.lake_url)
    datasets = {
        "inputs": LakePaths.inputs(ds),
        "item_embeddings": LakePaths.embeddings(ds),
        "index": LakePaths.index(ds),
        "candidates": LakePaths.candidates(ds),
        "digests": LakePaths.digests(ds),
        "report": LakePaths.reports(ds),
        "quarantine": LakePaths.quarantine(ds),
    }
    out: dict[str, Any] = {
        "warehouse": str(settings.duckdb_file)
        if settings.warehouse == "duckdb"
        else settings.bigquery_dataset,
        "lake": lake.uri(""),
    }
    for name, rel in datasets.items():
        out[name] = {"uri": lake.uri(rel), "published": lake.is_published(rel)}
    return out
