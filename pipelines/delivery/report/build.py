"""Build and publish the run report of one date: ``metrics.json`` and a self-contained ``report.html``.

Reads the lake through ``report.metrics``; every input is optional, a missing one leaves its section
saying so. Writes ``reports/ds=<ds>/`` via write-audit-publish: ``report.html`` (plots embedded as base64
PNG, no external assets) and ``metrics.json`` (every number the page shows), manifest last. The
``facts/`` folder beside the ``run=`` staging folders survives publishing, whose garbage collection only
removes older ``run=`` folders. The same facts, models and candidates give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.delivery.report.html import render_html
from pipelines.delivery.report.metrics import collect_metrics, metrics_json

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
METRICS_JSON = "metrics.json"


@dataclass
class ReportSummary:
    """What :func:`build_report` published for one ``ds``: where, which facts it found, headline numbers."""

    ds: str
    uri: str
    files: list[str]
    facts: list[str]
    missing_facts: list[str]
    headline: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(lake: Lake, ds: dt.date) -> ReportSummary:
    """Build and publish the run report of ``ds``.

    Args:
        lake: where the facts, models, candidates and inputs are, and where the report goes.
        ds: the run date, ``YYYY-MM-DD``.

    Returns:
        The published dataset's URI and files, the facts found and missing, and headline numbers.

    Raises:
        ValueError: ``ds`` is not a date.
        ReportInputError: a fact file, pointer or published dataset is malformed (the message names it).
        pipelines.core.lake.PublishConflict: another run published the report of ``ds`` meanwhile.
    """
    metrics = collect_metrics(lake, ds)
    html = render_html(metrics)
    dataset = LakePaths.reports(ds)
    staging = lake.begin_publish(dataset)
    lake.write_bytes(f"{staging}/{REPORT_HTML}", html.encode("utf-8"))
    lake.write_bytes(f"{staging}/{METRICS_JSON}", metrics_json(metrics))
    files = [METRICS_JSON, REPORT_HTML]
    headline = metrics["headline"]
    lake.publish(
        dataset,
        staging,
        files,
        metadata={"facts": metrics["facts"]["present"], "missing_facts": metrics["facts"]["missing"]},
    )
    log.info("report ds=%s: %s; missing facts %s", ds, headline, metrics["facts"]["missing"])
    return ReportSummary(
        ds=ds.isoformat(),
        uri=lake.uri(dataset),
        files=files,
        facts=metrics["facts"]["present"],
        missing_facts=metrics["facts"]["missing"],
        headline=headline,
    )
