"""The run report's page: ``templates/report.html.j2`` rendered from the metrics and plots, every data
string escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.core.paths import RANKER, TWO_TOWER
from pipelines.core.schema import QUARANTINE_REASONS
from pipelines.delivery.report.candidates import COVERAGE_TOP
from pipelines.delivery.report.plots import MODEL_LABELS, RANKER_ORDERS, build_plots, model_order, recall_ks

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
    two_tower = metrics["models"][TWO_TOWER]
    if two_tower["training"] is not None:
        evaluation = two_tower["training"]["evaluation"]
        retrieval_rows = [
            (MODEL_LABELS.get(model, model), evaluation[model]) for model in model_order(evaluation)
        ]
        if two_tower["training"]["champion_on_holdout"]:
            retrieval_rows.append(("champion, same hold-out", two_tower["training"]["champion_on_holdout"]))
    else:
        # Without training tonight, the champion's own promotion metrics are all there is to show.
        champion = two_tower["champion"]
        retrieval_rows = [("champion", champion["metrics"])] if champion else []
    return env.get_template("report.html.j2").render(
        m=metrics,
        plots=build_plots(metrics),
        ks=recall_ks(dict(retrieval_rows)),
        retrieval_rows=retrieval_rows,
        ranker_orders=RANKER_ORDERS,
        quarantine_reasons=_reason_columns(metrics["quality"]),
        coverage_top=COVERAGE_TOP,
        kinds=((TWO_TOWER, "Two-tower retrieval"), (RANKER, "LightGBM ranker")),
    )


def _reason_columns(quality: dict[str, Any] | None) -> list[str]:
    if quality is None:
        return []
    extra = sorted(set(quality["by_reason"]) - set(QUARANTINE_REASONS))
    return [*QUARANTINE_REASONS, *extra]
