"""The run report's view of the published candidate lists of ``ds``.

Reads ``candidates/ds=<ds>/`` and the ``items`` (the catalog) and ``users`` of ``inputs/ds=<ds>/``: score
and list-length distributions, reason counts and catalog coverage.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths

# Catalog coverage is measured over the part of each list a reader actually sees first.
COVERAGE_TOP = 10
SCORE_BINS = 40
SCORE_QUANTILES: tuple[float, ...] = (0.01, 0.1, 0.5, 0.9, 0.99)
# Reasons a published row can carry (see pipelines.serving.lists); always counted, zero or not.
LIST_REASONS: tuple[str, ...] = ("ranked", "retrieved", "explore", "fallback")


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


def candidates_metrics(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """Distributions, reasons and catalog coverage of ``ds``'s published candidate lists, and the system
    that made them (``system``, and as ``system_choice`` which promotion and why, as the manifest names
    them)."""
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
        items = pc.unique(read_input(lake, ds, "items", ["item_id"]).column("item_id"))
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
        users_in_inputs = lake.read_manifest(LakePaths.inputs(ds))["metadata"]["rows"]["users"]
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
        "system": metadata.get("system"),
        "system_choice": metadata.get("system_choice"),
    }
