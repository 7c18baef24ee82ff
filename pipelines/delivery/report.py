"""Run report of one date: what the night did, as ``metrics.json`` and a self-contained ``report.html``.

Reads (every input is optional; a missing one leaves its section saying so):
    ``reports/ds=<ds>/facts/<job>.json``: the result each job of ``pipelines.jobs`` recorded for ``ds``
    (feature rows, quality counts and SQL timings; training metrics, loss curves and promotion decisions;
    index recall; per-shard stage timings; digest counts);
    ``models/<kind>/champion.json`` and ``models/<kind>/<version>/decision.json``: the models in force and
    the blessing gate's decisions;
    ``candidates/ds=<ds>/`` (published lists) and ``inputs/ds=<ds>/items.parquet`` (the catalog) for score
    and list-length distributions, reason counts and catalog coverage.
Writes:
    ``reports/ds=<ds>/`` via write-audit-publish: ``report.html`` (plots embedded as base64 PNG, no
    external assets) and ``metrics.json`` (every number the page shows), manifest last. The ``facts/``
    folder sits beside the ``run=`` staging folders and survives publishing, whose garbage collection only
    removes older ``run=`` folders.

The report is a pure function of the lake's content: the same facts, models and candidates give the same
bytes (no wall clock, sorted JSON, PNGs without timestamps). A night without training has no training
facts; its training sections say so and show the champion in force instead.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import PermanentError
from pipelines.core.jobs import (
    BUILD_FEATURES,
    BUILD_INDEX,
    EMBED_ITEMS,
    EXPORT_INPUTS,
    NIGHT_FACTS,
    PUBLISH_CANDIDATES,
    PUBLISH_DIGESTS,
    TRAIN_RANKER,
    TRAIN_TWO_TOWER,
    Job,
)
from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, TWO_TOWER, LakePaths
from pipelines.core.schema import QUARANTINE_REASONS

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
REPORT_HTML = "report.html"
METRICS_JSON = "metrics.json"
# Catalog coverage is measured over the part of each list a reader actually sees first.
COVERAGE_TOP = 10
SCORE_BINS = 40
SCORE_QUANTILES: tuple[float, ...] = (0.01, 0.1, 0.5, 0.9, 0.99)
# Reasons a published row can carry (see pipelines.serving.candidates); always counted, zero or not.
LIST_REASONS: tuple[str, ...] = ("ranked", "retrieved", "explore", "fallback")
RETRIEVAL_MODELS: tuple[str, ...] = ("two_tower", "most_popular", "item_knn")
RANKER_ORDERS: tuple[tuple[str, str], ...] = (
    ("", "ranker"),
    ("retrieval_", "retrieval only"),
    ("logged_", "logged feed order"),
)


class ReportInputError(PermanentError, ValueError):
    """A fact, pointer or dataset the report reads is malformed; the message names the object."""


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


# -- entry point ---------------------------------------------------------------------------------------
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


def metrics_json(metrics: dict[str, Any]) -> bytes:
    """The bytes of ``metrics.json``: sorted keys, so equal metrics give equal bytes."""
    return (json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


# -- reading the lake ------------------------------------------------------------------------------------
def read_facts(lake: Lake, ds: dt.date) -> dict[str, dict[str, Any]]:
    """Every job fact recorded for ``ds``, by job name.

    Raises:
        ReportInputError: a fact file is not a JSON object.
    """
    folder = LakePaths.facts(ds)
    facts: dict[str, dict[str, Any]] = {}
    for name in lake.ls(folder):
        if not name.endswith(".json"):
            continue
        rel = f"{folder}/{name}"
        try:
            fact = lake.read_json(rel)
        except json.JSONDecodeError as exc:
            raise ReportInputError(f"{lake.uri(rel)} is not valid JSON: {exc}") from exc
        if not isinstance(fact, dict):
            raise ReportInputError(f"{lake.uri(rel)} must hold a JSON object, got {type(fact).__name__}")
        facts[name.removesuffix(".json")] = fact
    return facts


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn a missing key or a wrong type inside one input into an error that names that input."""
    try:
        yield
    except ReportInputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportInputError(f"{what} is malformed: {type(exc).__name__}: {exc}") from exc


def _read_pointer(lake: Lake, rel: str) -> dict[str, Any] | None:
    with _reading(lake.uri(rel)):
        content = lake.read_pointer(rel).content
        if content is not None and not isinstance(content, dict):
            raise TypeError(f"expected a JSON object, got {type(content).__name__}")
        return content


# -- metrics -------------------------------------------------------------------------------------------
def collect_metrics(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """Every number of the report of ``ds``, as the JSON-ready dict written to ``metrics.json``.

    Raises:
        ReportInputError: an input is malformed (the message names it).
    """
    facts = read_facts(lake, ds)

    def fact_uri(job: Job) -> str:
        return lake.uri(LakePaths.fact(ds, job.name))

    with _reading(lake.uri(LakePaths.candidates(ds))):
        candidates = _candidates_metrics(lake, ds)
    served = candidates.pop("served", {})
    publish = facts.get(PUBLISH_CANDIDATES.name)
    if publish is not None:
        with _reading(fact_uri(PUBLISH_CANDIDATES)):
            for kind in (TWO_TOWER, RANKER):
                served.setdefault(kind, publish.get(f"{kind}_version"))

    models: dict[str, Any] = {}
    for kind, job, training in (
        (TWO_TOWER, TRAIN_TWO_TOWER, _two_tower_training),
        (RANKER, TRAIN_RANKER, _ranker_training),
    ):
        fact = facts.get(job.name)
        section: dict[str, Any] = {
            "trained": fact is not None,
            "champion": _champion(lake, kind),
            "served": served.get(kind),
            "training": None,
        }
        if fact is not None:
            with _reading(fact_uri(job)):
                section["training"] = training(fact)
            section["training"]["decision"] = _decision(lake, kind, section["training"]["version"])
        models[kind] = section

    sections: dict[Job, Any] = {}
    for job, reader in (
        (BUILD_FEATURES, _features_metrics),
        (BUILD_INDEX, _index_metrics),
        (EMBED_ITEMS, _embed_metrics),
        (EXPORT_INPUTS, _inputs_metrics),
        (PUBLISH_CANDIDATES, _publish_metrics),
        (PUBLISH_DIGESTS, _digest_metrics),
    ):
        if job.name in facts:
            with _reading(fact_uri(job)):
                sections[job] = reader(facts[job.name])
        else:
            sections[job] = None

    metrics: dict[str, Any] = {
        "ds": ds.isoformat(),
        "facts": {
            "present": sorted(facts),
            "missing": [job.name for job in NIGHT_FACTS if job.name not in facts],
        },
        "models": models,
        "candidates": candidates,
        "quality": sections[BUILD_FEATURES]["quality"] if sections[BUILD_FEATURES] else None,
        "index": sections[BUILD_INDEX],
        "digests": sections[PUBLISH_DIGESTS],
        "rows": {
            "features": sections[BUILD_FEATURES]["rows"] if sections[BUILD_FEATURES] else None,
            "inputs": sections[EXPORT_INPUTS],
            "embedded_items": sections[EMBED_ITEMS]["n_items"] if sections[EMBED_ITEMS] else None,
            "indexed_items": sections[BUILD_INDEX]["n_items"] if sections[BUILD_INDEX] else None,
            "candidate_users": candidates["users"] if candidates["published"] else None,
            "candidate_rows": candidates["rows"] if candidates["published"] else None,
            "digest_messages": sections[PUBLISH_DIGESTS]["messages_written"]
            if sections[PUBLISH_DIGESTS]
            else None,
        },
        "timings": _timings(sections, models),
    }
    metrics["headline"] = _headline(metrics)
    return metrics


def _float(value: Any) -> float | None:
    """A finite float, or None for a missing or non-finite number (JSON has no NaN)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"expected a number, got {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or value != int(value):
        raise TypeError(f"expected a whole number, got {value!r}")
    return int(value)


def _numbers(values: dict[str, Any]) -> dict[str, float | None]:
    if not isinstance(values, dict):
        raise TypeError(f"expected an object of numbers, got {values!r}")
    return {str(key): _float(value) for key, value in sorted(values.items())}


def _loss_curves(history: Any) -> dict[str, list[float | None]]:
    """Loss per epoch by curve name; a plain list is the training loss."""
    if history is None:
        return {}
    if isinstance(history, list):
        history = {"loss": history}
    if not isinstance(history, dict):
        raise TypeError(f"loss_history must be a list or an object of lists, got {history!r}")
    curves = {}
    for name, values in sorted(history.items()):
        if not isinstance(values, list):
            raise TypeError(f"loss_history[{name!r}] must be a list, got {values!r}")
        curves[str(name)] = [_float(v) for v in values]
    return curves


def _two_tower_training(fact: dict[str, Any]) -> dict[str, Any]:
    evaluation = {name: _numbers(values) for name, values in sorted(fact["metrics"].items())}
    return {
        "version": str(fact["version"]),
        "promoted": bool(fact["promoted"]),
        "reason": str(fact["reason"]),
        "evaluation": evaluation,
        "champion_on_holdout": _numbers(fact["champion_metrics"]) if fact.get("champion_metrics") else None,
        "loss_history": _loss_curves(fact.get("loss_history")),
        "examples_per_second": _float(fact.get("examples_per_second")),
        "n_train_examples": _int(fact["n_train_examples"]) if "n_train_examples" in fact else None,
    }


def _ranker_training(fact: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": str(fact["version"]),
        "promoted": bool(fact["promoted"]),
        "reason": str(fact["reason"]),
        "evaluation": _numbers(fact["metrics"]),
        "champion_on_holdout": _numbers(fact["champion_metrics"]) if fact.get("champion_metrics") else None,
        "two_tower_version": fact.get("two_tower_version"),
    }


def _champion(lake: Lake, kind: str) -> dict[str, Any] | None:
    rel = LakePaths.champion(kind)
    pointer = _read_pointer(lake, rel)
    if pointer is None:
        return None
    with _reading(lake.uri(rel)):
        return {
            "version": str(pointer["version"]),
            "metric": pointer.get("metric"),
            "value": _float(pointer.get("value")),
            "metrics": _numbers(pointer.get("metrics") or {}),
            "previous_version": pointer.get("previous_version"),
            "promoted_at": pointer.get("promoted_at"),
        }


def _decision(lake: Lake, kind: str, version: str) -> dict[str, Any] | None:
    """The blessing gate's record of ``version``, when the version is a registry name and one exists."""
    from pipelines.training.registry import check_version

    try:
        check_version(version)
    except ValueError:
        return None
    rel = f"{LakePaths.model_dir(kind, version)}/decision.json"
    if not lake.exists(rel):
        return None
    with _reading(lake.uri(rel)):
        decision = lake.read_json(rel)
        return {
            "metric": str(decision["metric"]),
            "value": _float(decision["value"]),
            "champion_version": decision.get("champion_version"),
            "champion_value": _float(decision.get("champion_value")),
            "floor": _float(decision.get("floor")),
            "tolerance": _float(decision.get("tolerance")),
        }


def _features_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    quarantined: dict[str, dict[str, int]] = {}
    checked: dict[str, dict[str, int]] = {}
    for table, counts in sorted(fact.get("quality", {}).items()):
        counts = {str(reason): _int(n) for reason, n in sorted(counts.items())}
        bad = {reason: n for reason, n in counts.items() if reason != "ok" and n}
        quarantined[table] = bad
        checked[table] = {"ok": counts.get("ok", 0), "bad": sum(bad.values())}
    by_reason: dict[str, int] = {}
    for bad in quarantined.values():
        for reason, n in bad.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return {
        "rows": {str(k): _int(v) for k, v in sorted(fact.get("rows", {}).items())},
        "seconds": _numbers(fact.get("seconds", {})),
        "quality": {
            "quarantined": quarantined,
            "by_reason": dict(sorted(by_reason.items())),
            "checked": checked,
            "bad_fraction": _numbers(fact.get("bad_fraction", {})),
            "total_quarantined": sum(by_reason.values()),
        },
    }


def _index_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    return {
        "recall": _float(fact["recall"]),
        "recall_k": _int(fact["recall_k"]) if "recall_k" in fact else None,
        "n_items": _int(fact["n_items"]),
        "build_seconds": _float(fact.get("build_seconds")),
        "model_version": fact.get("model_version"),
    }


def _embed_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    return {"n_items": _int(fact["n_items"]), "items_per_s": _float(fact.get("items_per_s"))}


def _inputs_metrics(fact: dict[str, Any]) -> dict[str, int]:
    return {str(k): _int(v) for k, v in sorted(fact["rows"].items())}


def _publish_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    stage_seconds: dict[str, float] = {}
    shard_seconds: dict[str, float] = {}
    for shard, result in sorted(fact.get("shards", {}).items(), key=lambda kv: int(kv[0])):
        seconds = _numbers(result.get("seconds", {}))
        for stage, value in seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + (value or 0.0)
        shard_seconds[str(shard)] = round(sum(v or 0.0 for v in seconds.values()), 6)
    return {
        "published": bool(fact.get("published", False)),
        "num_shards": _int(fact["num_shards"]),
        "users": _int(fact["users"]),
        "rows": _int(fact["rows"]),
        "stage_seconds": {k: round(v, 6) for k, v in sorted(stage_seconds.items())},
        "shard_seconds": shard_seconds,
    }


def _digest_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    return {
        "dry_run": bool(fact.get("dry_run", False)),
        "users_total": _int(fact["users_total"]),
        "messages_written": _int(fact["messages_written"]),
        "skipped": {str(k): _int(v) for k, v in sorted(fact.get("skipped", {}).items())},
        "seconds": _float(fact.get("seconds")),
    }


def _timings(sections: dict[Job, Any], models: dict[str, Any]) -> dict[str, Any]:
    features = sections[BUILD_FEATURES]
    publish = sections[PUBLISH_CANDIDATES]
    index = sections[BUILD_INDEX]
    digests = sections[PUBLISH_DIGESTS]
    ranker = models[RANKER]["training"]
    nightly: dict[str, float | None] = {}
    if ranker is not None and ranker["evaluation"].get("fit_seconds") is not None:
        nightly["ranker fit"] = ranker["evaluation"]["fit_seconds"]
    if index is not None and index["build_seconds"] is not None:
        nightly["index build"] = index["build_seconds"]
    if publish is not None:
        for stage, seconds in publish["stage_seconds"].items():
            nightly[f"shards: {stage}"] = seconds
    if digests is not None and digests["seconds"] is not None:
        nightly["digests render"] = digests["seconds"]
    return {
        "features_sql": features["seconds"] if features else None,
        "features_sql_total": round(sum(v or 0.0 for v in features["seconds"].values()), 6)
        if features
        else None,
        "nightly": nightly,
        "shard_totals": publish["shard_seconds"] if publish else None,
    }


def _distribution(values: np.ndarray) -> dict[str, Any] | None:
    """Count, mean, min, max, quantiles and a fixed-bin histogram of finite ``values``."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    low, high = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=SCORE_BINS, range=(low, high) if high > low else None)
    return {
        "count": len(values),
        "mean": float(values.mean()),
        "min": low,
        "max": high,
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in SCORE_QUANTILES},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _column_floats(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _candidates_metrics(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """Distributions, reasons and catalog coverage of ``ds``'s published candidate lists."""
    from pipelines.serving.inputs import read_input
    from pipelines.serving.shards import read_candidates

    dataset = LakePaths.candidates(ds)
    if not lake.is_published(dataset):
        return {"published": False}
    metadata = lake.read_manifest(dataset).get("metadata", {})
    table = read_candidates(lake, ds)
    missing = {"user_id", "rank", "item_id", "score", "reason"} - set(table.column_names)
    if missing:
        raise KeyError(f"candidate files lack columns {sorted(missing)}")
    by_user = table.group_by("user_id").aggregate([("rank", "count")])
    lengths = by_user.column("rank_count").to_numpy()
    length_counts = np.bincount(lengths) if len(lengths) else np.zeros(0, dtype=np.int64)
    reasons = {reason: 0 for reason in LIST_REASONS}
    for entry in pc.value_counts(table.column("reason").fill_null("")).to_pylist():
        reasons[entry["values"] or "(none)"] = entry["counts"]
    top = table.filter(pc.less_equal(table.column("rank"), COVERAGE_TOP))
    listed_top = pc.unique(top.column("item_id"))
    listed = pc.unique(table.column("item_id"))

    catalog: dict[str, Any] = {"size": None}
    users_in_inputs = None
    if lake.is_published(LakePaths.inputs(ds)):
        items = pc.unique(read_input(lake, ds, "items").column("item_id"))
        size = len(items)
        in_top = int(pc.sum(pc.is_in(listed_top, value_set=items)).as_py() or 0)
        in_all = int(pc.sum(pc.is_in(listed, value_set=items)).as_py() or 0)
        catalog = {
            "size": size,
            f"distinct_items_top_{COVERAGE_TOP}": in_top,
            f"coverage_top_{COVERAGE_TOP}": in_top / size if size else None,
            "distinct_items": in_all,
            "coverage": in_all / size if size else None,
            "listed_items_not_in_catalog": len(listed) - in_all,
        }
        users_in_inputs = read_input(lake, ds, "users").num_rows
    users = len(lengths)
    return {
        "published": True,
        "users": users,
        "rows": table.num_rows,
        "users_in_inputs": users_in_inputs,
        "users_without_list": users_in_inputs - users if users_in_inputs is not None else None,
        "list_length": {
            "min": int(lengths.min()) if users else None,
            "median": float(np.median(lengths)) if users else None,
            "mean": float(lengths.mean()) if users else None,
            "max": int(lengths.max()) if users else None,
            "counts": {str(n): int(c) for n, c in enumerate(length_counts) if c},
        },
        "score": _distribution(_column_floats(table, "score")),
        "retrieval_score": _distribution(_column_floats(table, "retrieval_score"))
        if "retrieval_score" in table.column_names
        else None,
        "reasons": dict(sorted(reasons.items())),
        "catalog": catalog,
        f"distinct_items_top_{COVERAGE_TOP}": len(listed_top),
        "distinct_items": len(listed),
        "served": {kind: metadata.get(f"{kind}_version") for kind in (TWO_TOWER, RANKER)},
    }


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    candidates = metrics["candidates"]
    catalog = candidates.get("catalog", {})
    quality = metrics["quality"]
    return {
        "candidate_users": candidates.get("users"),
        "candidate_rows": candidates.get("rows"),
        f"coverage_top_{COVERAGE_TOP}": catalog.get(f"coverage_top_{COVERAGE_TOP}"),
        "index_recall": metrics["index"]["recall"] if metrics["index"] else None,
        "quarantined_rows": quality["total_quarantined"] if quality else None,
        "digest_messages": metrics["rows"]["digest_messages"],
        **{
            f"{kind}_promoted": section["training"]["promoted"] if section["training"] else None
            for kind, section in metrics["models"].items()
        },
    }


# -- plots ---------------------------------------------------------------------------------------------
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
        models = _model_order(evaluation)
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


def _model_order(evaluation: dict[str, Any]) -> list[str]:
    """The two-tower first, then the baselines, then any other model evaluated."""
    return [m for m in RETRIEVAL_MODELS if m in evaluation] + sorted(set(evaluation) - set(RETRIEVAL_MODELS))


def _recall_ks(evaluation: dict[str, dict[str, float | None]]) -> list[int]:
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
        ks = _recall_ks(two_tower["evaluation"])
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


# -- HTML ----------------------------------------------------------------------------------------------
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
            (MODEL_LABELS.get(model, model), evaluation[model]) for model in _model_order(evaluation)
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
        ks=_recall_ks(dict(retrieval_rows)),
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
