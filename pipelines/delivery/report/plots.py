"""The run report's plots: matplotlib figures of the metrics as base64 PNGs, without metadata so that the
bytes are stable.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.core.paths import RANKER, TWO_TOWER
from pipelines.delivery.report.candidates import COVERAGE_TOP

RETRIEVAL_MODELS: tuple[str, ...] = ("two_tower", "most_popular", "item_knn")
RANKER_ORDERS: tuple[tuple[str, str], ...] = (
    ("", "ranker"),
    ("retrieval_", "retrieval only"),
    ("logged_", "logged feed order"),
)


PALETTE = {
    "two_tower": "#2563eb",
    "most_popular": "#9ca3af",
    "item_knn": "#f59e0b",
    "ranker": "#2563eb",
    "retrieval only": "#9ca3af",
    "logged feed order": "#f59e0b",
    "features": "#0d9488",
    "nightly": "#6366f1",
    "bad": "#dc2626",
}
MODEL_LABELS = {"two_tower": "two-tower", "most_popular": "most popular", "item_knn": "item-kNN"}
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


def _label_bars(ax: Any, bars: Any, fmt: str) -> None:
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) for b in bars], padding=2, fontsize=7)


def _plot_loss(curves: dict[str, list[float | None]]) -> str:
    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        for name, values in curves.items():
            epochs = np.arange(1, len(values) + 1)
            y = np.array([np.nan if v is None else v for v in values], dtype=float)
            ax.plot(epochs, y, marker="o", linewidth=2, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("Two-tower training loss")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(curves) > 1:
            ax.legend()

    return _png(draw, (5.6, 3.2))


def _plot_recall(evaluation: dict[str, dict[str, float | None]], ks: list[int]) -> str:
    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        models = model_order(evaluation)
        width = 0.8 / max(len(models), 1)
        x = np.arange(len(ks))
        for i, model in enumerate(models):
            values = [evaluation[model].get(f"recall_at_{k}") or 0.0 for k in ks]
            bars = ax.bar(
                x + (i - (len(models) - 1) / 2) * width,
                values,
                width,
                label=MODEL_LABELS.get(model, model),
                color=PALETTE.get(model),
            )
            _label_bars(ax, bars, "{:.2f}")
        ax.set_xticks(x, [f"Recall@{k}" for k in ks])
        ax.set_ylim(0, 1.08)
        ax.set_title("Retrieval on the hold-out")
        ax.legend(loc="upper left", ncols=len(models))

    return _png(draw, (5.6, 3.2))


def _plot_ranker(evaluation: dict[str, float | None]) -> str:
    cutoffs = [c for c in (5, 10) if evaluation.get(f"ndcg_at_{c}") is not None]

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        orders = [(p, name) for p, name in RANKER_ORDERS if evaluation.get(f"{p}ndcg_at_10") is not None]
        width = 0.8 / max(len(orders), 1)
        x = np.arange(len(cutoffs))
        for i, (prefix, name) in enumerate(orders):
            values = [evaluation.get(f"{prefix}ndcg_at_{c}") or 0.0 for c in cutoffs]
            bars = ax.bar(
                x + (i - (len(orders) - 1) / 2) * width, values, width, label=name, color=PALETTE[name]
            )
            _label_bars(ax, bars, "{:.3f}")
        ax.set_xticks(x, [f"NDCG@{c}" for c in cutoffs])
        ax.set_ylim(0, 1.08)
        ax.set_title("Ranker vs retrieval-only vs logged order (hold-out)")
        ax.legend(loc="upper left", ncols=len(orders))

    return _png(draw, (5.6, 3.2))


def _plot_scores(score: dict[str, Any] | None, retrieval: dict[str, Any] | None) -> str:
    panels = [(title, d) for title, d in (("final score", score), ("retrieval score", retrieval)) if d]

    def draw(figure: Any) -> None:
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, dist) in zip(axes, panels, strict=True):
            edges = np.array(dist["histogram"]["edges"])
            ax.stairs(dist["histogram"]["counts"], edges, fill=True, color=PALETTE["two_tower"], alpha=0.8)
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


def model_order(evaluation: dict[str, Any]) -> list[str]:
    """The two-tower first, then the baselines, then any other model evaluated."""
    return [m for m in RETRIEVAL_MODELS if m in evaluation] + sorted(set(evaluation) - set(RETRIEVAL_MODELS))


def recall_ks(evaluation: dict[str, dict[str, float | None]]) -> list[int]:
    """The cutoffs ``k`` of every ``recall_at_<k>`` metric in ``evaluation``, ascending."""
    ks = {
        int(name.removeprefix("recall_at_"))
        for values in evaluation.values()
        for name in values
        if name.startswith("recall_at_") and name.removeprefix("recall_at_").isdigit()
    }
    return sorted(ks)


def build_plots(metrics: dict[str, Any]) -> dict[str, str | None]:
    """Base64 PNGs by plot name; None where the numbers behind a plot are missing."""
    plots: dict[str, str | None] = dict.fromkeys(
        ("loss", "recall", "ranker", "scores", "lengths", "coverage", "timings", "quarantine")
    )
    two_tower = metrics["models"][TWO_TOWER]["training"]
    if two_tower is not None:
        if two_tower["loss_history"]:
            plots["loss"] = _plot_loss(two_tower["loss_history"])
        ks = recall_ks(two_tower["evaluation"])
        if ks:
            plots["recall"] = _plot_recall(two_tower["evaluation"], ks)
    ranker = metrics["models"][RANKER]["training"]
    if ranker is not None and ranker["evaluation"].get("ndcg_at_10") is not None:
        plots["ranker"] = _plot_ranker(ranker["evaluation"])
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
