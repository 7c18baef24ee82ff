"""The run report's page: ``templates/report.html.j2`` rendered from the metrics and plots, every data
string escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.core.schema import QUARANTINE_REASONS
from pipelines.delivery.report.candidates import COVERAGE_TOP
from pipelines.delivery.report.plots import build_plots
from pipelines.delivery.report.verdict import interval_words, metric_label

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def _fmt_number(value: Any, digits: int = 3) -> str:
    """Integers with thousands separators, floats with ``digits`` decimals, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _fmt_percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}%}"


def render_html(metrics: dict[str, Any]) -> str:
    """The report page for ``metrics`` (from :func:`collect_metrics`); every data string is escaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _fmt_number
    env.filters["pct"] = _fmt_percent
    env.filters["metric"] = metric_label
    env.filters["interval"] = interval_words
    return env.get_template("report.html.j2").render(
        m=metrics,
        plots=build_plots(metrics),
        **_test_columns(metrics["system"]["training"]),
        quarantine_reasons=_reason_columns(metrics["quality"]),
        coverage_top=COVERAGE_TOP,
    )


def _metric_order(name: str) -> tuple[str, int]:
    """``recall_at_10`` before ``recall_at_50`` before ``recall_at_100``."""
    prefix, _, k = name.rpartition("_at_")
    return (prefix, int(k)) if k.isdigit() else (name, 0)


def _test_columns(training: dict[str, Any] | None) -> dict[str, list[str]]:
    """The test night's metrics with intervals (the selection metric first) and the other summary
    numbers (coverage, fresh share), as ``interval_metrics`` and ``summary_metrics``."""
    if training is None or training["selection"] is None:
        return {"interval_metrics": [], "summary_metrics": []}
    selection = training["selection"]
    with_interval = {name for row in selection["test"] for name in row["intervals"]}
    summary = {name for row in selection["test"] for name in row["summary"]} - with_interval - {"n_users"}
    return {
        "interval_metrics": sorted(
            with_interval, key=lambda name: (name != selection["metric"], _metric_order(name))
        ),
        "summary_metrics": sorted(summary, key=_metric_order),
    }


def _reason_columns(quality: dict[str, Any] | None) -> list[str]:
    if quality is None:
        return []
    extra = sorted(set(quality["by_reason"]) - set(QUARANTINE_REASONS))
    return [*QUARANTINE_REASONS, *extra]
