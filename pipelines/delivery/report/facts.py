"""The run report's reading of the job facts and model pointers of ``ds`` into JSON-ready sections.

Reads ``reports/ds=<ds>/facts/<job>.json``, the result each job of ``pipelines.jobs`` recorded for ``ds``
(feature rows, quality counts and SQL timings; training metrics, loss curves and promotion decisions;
index recall; per-shard stage timings; digest counts), ``models/<kind>/champion.json`` (the models in
force) and ``models/<kind>/<version>/decision.json`` (the blessing gate's decisions). The section
readers raise KeyError or TypeError on a malformed fact; :func:`reading` turns those into a
:class:`ReportInputError` naming the input.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths


class ReportInputError(PermanentError, ValueError):
    """A fact, pointer or dataset the report reads is malformed; the message names the object."""


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
def reading(what: str) -> Iterator[None]:
    """Turn a missing key or a wrong type inside one input into an error that names that input."""
    try:
        yield
    except ReportInputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportInputError(f"{what} is malformed: {type(exc).__name__}: {exc}") from exc


def _read_pointer(lake: Lake, rel: str) -> dict[str, Any] | None:
    with reading(lake.uri(rel)):
        content = lake.read_pointer(rel).content
        if content is not None and not isinstance(content, dict):
            raise TypeError(f"expected a JSON object, got {type(content).__name__}")
        return content


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


def two_tower_training(fact: dict[str, Any]) -> dict[str, Any]:
    """The two-tower training section from the ``train_two_tower`` fact: outcome, evaluation, loss curves."""
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


def ranker_training(fact: dict[str, Any]) -> dict[str, Any]:
    """The ranker training section from the ``train_ranker`` fact: outcome and evaluation."""
    return {
        "version": str(fact["version"]),
        "promoted": bool(fact["promoted"]),
        "reason": str(fact["reason"]),
        "evaluation": _numbers(fact["metrics"]),
        "champion_on_holdout": _numbers(fact["champion_metrics"]) if fact.get("champion_metrics") else None,
        "two_tower_version": fact.get("two_tower_version"),
    }


def read_champion(lake: Lake, kind: str) -> dict[str, Any] | None:
    """The champion pointer of ``kind`` (the model in force), or None when there is none.

    Raises:
        ReportInputError: the pointer is malformed.
    """
    rel = LakePaths.champion(kind)
    pointer = _read_pointer(lake, rel)
    if pointer is None:
        return None
    with reading(lake.uri(rel)):
        return {
            "version": str(pointer["version"]),
            "metric": pointer.get("metric"),
            "value": _float(pointer.get("value")),
            "metrics": _numbers(pointer.get("metrics") or {}),
            "previous_version": pointer.get("previous_version"),
            "promoted_at": pointer.get("promoted_at"),
        }


def read_decision(lake: Lake, kind: str, version: str) -> dict[str, Any] | None:
    """The blessing gate's record of ``version``, when the version is a registry name and one exists."""
    from pipelines.training.registry import check_version

    try:
        check_version(version)
    except ValueError:
        return None
    rel = f"{LakePaths.model_dir(kind, version)}/decision.json"
    if not lake.exists(rel):
        return None
    with reading(lake.uri(rel)):
        decision = lake.read_json(rel)
        return {
            "metric": str(decision["metric"]),
            "value": _float(decision["value"]),
            "champion_version": decision.get("champion_version"),
            "champion_value": _float(decision.get("champion_value")),
            "floor": _float(decision.get("floor")),
            "tolerance": _float(decision.get("tolerance")),
        }


def features_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Row counts, SQL timings and quarantine counts from the ``build_features`` fact."""
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


def index_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Recall, size and build time of the item index from the ``build_index`` fact."""
    return {
        "recall": _float(fact["recall"]),
        "recall_k": _int(fact["recall_k"]) if "recall_k" in fact else None,
        "n_items": _int(fact["n_items"]),
        "build_seconds": _float(fact.get("build_seconds")),
        "model_version": fact.get("model_version"),
    }


def embed_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Items embedded and throughput from the ``embed_items`` fact."""
    return {"n_items": _int(fact["n_items"]), "items_per_s": _float(fact.get("items_per_s"))}


def inputs_metrics(fact: dict[str, Any]) -> dict[str, int]:
    """Rows per serving input from the ``export_inputs`` fact."""
    return {str(k): _int(v) for k, v in sorted(fact["rows"].items())}


def publish_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Users, rows and stage timings summed over shards from the ``publish_candidates`` fact."""
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


def digest_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Messages written and users skipped from the ``publish_digests`` fact."""
    return {
        "dry_run": bool(fact.get("dry_run", False)),
        "users_total": _int(fact["users_total"]),
        "messages_written": _int(fact["messages_written"]),
        "skipped": {str(k): _int(v) for k, v in sorted(fact.get("skipped", {}).items())},
        "seconds": _float(fact.get("seconds")),
    }
