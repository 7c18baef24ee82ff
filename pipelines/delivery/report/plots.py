"""The run report's plots: matplotlib figures of the metrics as base64 PNGs, without metadata so that the
bytes are stable.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.delivery.report.candidates import COVERAGE_TOP
from pipelines.delivery.report.verdict import metric_label

PALETTE = {
    "accent": "#2563eb",
    "served": "#16a34a",
    "other": "#9ca3af",
    "features": "#0d9488",
    "nightly": "#6366f1",
    "bad": "#dc2626",
}
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.edgecolor": "#9ca3af",
    "legend.frameon": False,
    # Labels come from data (table names, reasons, stages): a "$" must not start mathtext.
    "text.parse_math": False,
    "svg.hashsalt": "nightfeed",
}


def _png(draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """Draw on a fresh Agg figure and return the PNG as base64 (no metadata, so bytes are stable)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=size, dpi=110, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=144, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_test_night(rows: list[dict[str, Any]], metric: str) -> str:
    """The test night's ``metric`` per system, best first, with 95% interval bars; the served one green."""

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        y = np.arange(len(rows))
        means = np.array([row["intervals"][metric]["mean"] for row in rows])
        lows = np.array([row["intervals"][metric]["low"] for row in rows])
        highs = np.array([row["intervals"][metric]["high"] for row in rows])
        colours = [PALETTE["served"] if row["served"] else PALETTE["other"] for row in rows]
        bars = ax.barh(y, means, color=colours, height=0.6)
        ax.errorbar(means, y, xerr=[means - lows, highs - means], fmt="none", ecolor="#111827", capsize=3)
        ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], padding=4, fontsize=7, label_type="center")
        names = [f"{row['label']} · {row['role']}" + (", served" if row["served"] else "") for row in rows]
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, max(float(highs.max()), 1e-3) * 1.1)
        ax.set_xlabel(f"{metric_label(metric)} on the test night (whiskers: 95% interval)")
        ax.set_title("Systems replayed on the test night")

    return _png(draw, (9.6, 1.2 + 0.3 * len(rows)))


def _plot_scores(score: dict[str, Any] | None, retrieval: dict[str, Any] | None) -> str:
    panels = [(title, d) for title, d in (("final score", score), ("retrieval score", retrieval)) if d]

    def draw(figure: Any) -> None:
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, dist) in zip(axes, panels, strict=True):
            edges = np.array(dist["histogram"]["edges"])
            ax.stairs(dist["histogram"]["counts"], edges, fill=True, color=PALETTE["accent"], alpha=0.8)
            ax.axvline(dist["quantiles"]["p50"], color="#111827", linewidth=1, linestyle="--")
            ax.set_title(f"Published {title}")
            ax.set_xlabel("score (dashed: median)")
        axes[0].set_ylabel("rows")

    return _png(draw, (5.6, 3.2))


def _plot_lengths(counts: dict[str, int]) -> str:
    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        lengths = [int(n) for n in counts]
        ax.bar(lengths, list(counts.values()), width=0.9, color=PALETTE["nightly"])
        ax.set_xlabel("posts in the list")
        ax.set_ylabel("users")
        ax.set_title("List lengths")
        ax.xaxis.get_major_locator().set_params(integer=True)

    return _png(draw, (5.6, 3.2))


def _plot_coverage(catalog: dict[str, Any]) -> str:
    rows = [
        (f"top-{COVERAGE_TOP} of every list", catalog[f"distinct_items_top_{COVERAGE_TOP}"]),
        ("whole lists", catalog["distinct_items"]),
    ]

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        size = catalog["size"]
        y = np.arange(len(rows))
        ax.barh(y, [size] * len(rows), color="#e5e7eb", height=0.55)
        bars = ax.barh(y, [n for _, n in rows], color=PALETTE["features"], height=0.55)
        ax.bar_label(bars, labels=[f"{n} / {size} ({n / size:.0%})" for _, n in rows], padding=4)
        ax.set_yticks(y, [label for label, _ in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, size * 1.35)
        ax.set_xlabel("distinct posts")
        ax.set_title("Catalog coverage of the published lists")

    return _png(draw, (5.6, 2.2))


def _plot_timings(features_sql: dict[str, float | None] | None, nightly: dict[str, float | None]) -> str:
    panels = [
        (title, {k: v or 0.0 for k, v in values.items()}, colour)
        for title, values, colour in (
            ("Feature SQL models (s)", features_sql or {}, PALETTE["features"]),
            ("Training and nightly stages, shards summed (s)", nightly, PALETTE["nightly"]),
        )
        if values
    ]
    tallest = max(len(values) for _, values, _ in panels)

    def draw(figure: Any) -> None:
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, values, colour) in zip(axes, panels, strict=True):
            y = np.arange(len(values))
            bars = ax.barh(y, list(values.values()), color=colour, height=0.65)
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values.values()], padding=3, fontsize=7)
            ax.set_yticks(y, list(values))
            ax.invert_yaxis()
            ax.set_xlim(0, max(max(values.values()), 1e-3) * 1.25)
            ax.set_title(title)

    return _png(draw, (11.2, 0.8 + 0.26 * tallest))


def _plot_quarantine(quarantined: dict[str, dict[str, int]]) -> str:
    bars = [
        (f"{table} · {reason}", n) for table, reasons in quarantined.items() for reason, n in reasons.items()
    ]

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        y = np.arange(len(bars))
        drawn = ax.barh(y, [n for _, n in bars], color=PALETTE["bad"], height=0.5)
        ax.bar_label(drawn, padding=3)
        ax.set_yticks(y, [label for label, _ in bars])
        ax.invert_yaxis()
        ax.set_xlim(0, max(n for _, n in bars) * 1.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("rows quarantined")
        ax.set_title("Quarantined rows by table and reason")

    return _png(draw, (5.6, 1.5 + 0.3 * len(bars)))


def build_plots(metrics: dict[str, Any]) -> dict[str, str | None]:
    """Base64 PNGs by plot name; None where the numbers behind a plot are missing."""
    plots: dict[str, str | None] = dict.fromkeys(
        ("test_night", "scores", "lengths", "coverage", "timings", "quarantine")
    )
    training = metrics["system"]["training"]
    if training is not None and training["selection"] is not None:
        plots["test_night"] = _plot_test_night(training["selection"]["test"], training["selection"]["metric"])
    candidates = metrics["candidates"]
    if candidates["published"]:
        if candidates["score"] or candidates["retrieval_score"]:
            plots["scores"] = _plot_scores(candidates["score"], candidates["retrieval_score"])
        if candidates["list_length"]["counts"]:
            plots["lengths"] = _plot_lengths(candidates["list_length"]["counts"])
        if candidates["catalog"]["size"]:
            plots["coverage"] = _plot_coverage(candidates["catalog"])
    timings = metrics["timings"]
    if timings["features_sql"] or timings["nightly"]:
        plots["timings"] = _plot_timings(timings["features_sql"], timings["nightly"])
    quality = metrics["quality"]
    if quality and quality["total_quarantined"]:
        plots["quarantine"] = _plot_quarantine(quality["quarantined"])
    return plots
