"""Feature step: run the feature SQL for one ``ds``, with data-quality checks and quarantine.

Reads the raw tables (``raw_events``, ``raw_items``, ``raw_users``) and writes, each as its ``ds``
partition (a rerun replaces it whole): the checked arrivals, the ``quarantine`` table, the staged tables,
``user_features``, ``item_features``, ``retrieval_examples`` and ``ranking_examples``. The quarantined
rows are also exported to the lake (``quarantine/ds=…/``) with a per-reason summary.

A day whose share of bad rows in any raw table exceeds ``quality.max_bad_fraction`` stops before the
staging models run, so nothing downstream is built from it; a day with no events stops too.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import QUALITY_SUMMARY, QUARANTINE_ROWS
from pipelines.core.settings import Settings
from pipelines.core.sql_catalog import load_catalog
from pipelines.core.sql_params import sql_params
from pipelines.core.warehouse import Warehouse

log = logging.getLogger(__name__)

# The audit a model contract can name (``audit: quality_gate``): the quality gate runs right after it.
QUALITY_GATE = "quality_gate"


class DataQualityError(PermanentError):
    """Too many bad rows, or no events at all: a permanent failure for this ds until the data is fixed."""


class NoEventsError(DataQualityError):
    """No raw events arrived for the day: a nightly run refuses it; a history build over imported data
    builds it as a quiet day (its features come from the days before)."""


@dataclass
class FeaturesReport:
    ds: str
    rows: dict[str, int] = field(default_factory=dict)
    quality: dict[str, dict[str, int]] = field(default_factory=dict)
    bad_fraction: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_features(
    warehouse: Warehouse, lake: Lake, ds: dt.date, settings: Settings, quiet_day: bool = False
) -> FeaturesReport:
    """Build every feature table for ``ds``.

    Args:
        warehouse: where the raw tables are and the feature tables go.
        lake: where the quarantined rows are exported.
        ds: the run date.
        settings: quality thresholds and feature windows.
        quiet_day: build ``ds`` even when no events arrived on it (a gap in an imported log: users,
            posts and their history windows still exist, and a night after it can be served).

    Returns:
        Row counts per table, bad-row counts per table and reason, and timings.

    Raises:
        NoEventsError: no events arrived on ``ds``.
        DataQualityError: a raw table's bad share is above the threshold.
    """
    report = FeaturesReport(ds=ds.isoformat())
    params = sql_params(settings)
    if not warehouse.table_exists("raw_events"):
        raise NoEventsError(f"no raw events were ever loaded: refusing to build features for ds={ds}")
    if warehouse.count_rows("raw_events", ds) == 0 and not quiet_day:
        raise NoEventsError(f"no raw events arrived for ds={ds}: refusing to build features from nothing")

    for model in load_catalog().models:
        started = time.perf_counter()
        report.rows[model.name] = warehouse.run_model(model, ds, **params)
        report.seconds[model.name] = round(time.perf_counter() - started, 3)
        if model.audit == QUALITY_GATE:
            # Models that read raw rows depend on the audited one: nothing is built from a failed day.
            _check_quality(warehouse, lake, ds, settings, report)
    log.info("features ds=%s: %s", ds, report.rows)
    return report


def _check_quality(
    warehouse: Warehouse, lake: Lake, ds: dt.date, settings: Settings, report: FeaturesReport
) -> None:
    summary = warehouse.run_query(QUALITY_SUMMARY, ds).to_pylist()
    for row in summary:
        reasons = report.quality.setdefault(row["source_table"], {})
        reasons[row["reject_reason"] or "ok"] = int(row["n_rows"])
    for table, reasons in report.quality.items():
        total = sum(reasons.values())
        report.bad_fraction[table] = (total - reasons.get("ok", 0)) / total if total else 0.0

    quarantined = warehouse.run_query(QUARANTINE_ROWS, ds)
    staging = lake.begin_publish(LakePaths.quarantine(ds))
    lake.write_parquet(f"{staging}/quarantine.parquet", quarantined)
    lake.publish(
        LakePaths.quarantine(ds),
        staging,
        ["quarantine.parquet"],
        metadata={"counts": report.quality, "bad_fraction": report.bad_fraction},
    )

    limit = settings.quality.max_bad_fraction
    over = {t: f for t, f in report.bad_fraction.items() if f > limit}
    if over:
        details = "; ".join(
            f"{t}: {f:.2%} bad ({_reasons(report.quality[t])})" for t, f in sorted(over.items())
        )
        raise DataQualityError(
            f"ds={ds}: bad rows above quality.max_bad_fraction={limit:.2%}: {details}. "
            f"Quarantined rows: {lake.uri(LakePaths.quarantine(ds))}"
        )


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()) if reason != "ok")
