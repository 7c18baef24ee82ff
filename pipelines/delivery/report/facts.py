"""The run report's reading of the job facts and the system champion of ``ds`` into JSON-ready sections.

Reads ``reports/ds=<ds>/facts/<job>.json``, the result each job of ``pipelines.jobs`` recorded for ``ds``
(feature rows, quality counts and SQL timings; index recall; per-shard stage timings; digest counts), and
``models/system/champion.json`` (the system in force); the training fact is read by ``report.selection``.
The section readers raise KeyError, TypeError or ValueError on a malformed fact; :func:`reading` turns
those into a :class:`ReportInputError` naming the input.
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
from pipelines.core.paths import SYSTEM, LakePaths
from pipelines.serving.system import ServedSystem


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


def as_float(value: Any) -> float | None:
    """A finite float, or None for a missing or non-finite number (JSON has no NaN).

    Raises:
        TypeError: not a number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"expected a number, got {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def as_int(value: Any) -> int:
    """A whole number as an int (``3.0`` is 3).

    Raises:
        TypeError: not a whole number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or value != int(value):
        raise TypeError(f"expected a whole number, got {value!r}")
    return int(value)


def as_numbers(values: dict[str, Any]) -> dict[str, float | None]:
    """An object of numbers, keys sorted, each through :func:`as_float`.

    Raises:
        TypeError: not an object, or a value is not a number.
    """
    if not isinstance(values, dict):
        raise TypeError(f"expected an object of numbers, got {values!r}")
    return {str(key): as_float(value) for key, value in sorted(values.items())}


def read_system(value: Any) -> ServedSystem:
    """A served system from its JSON object (``ServedSystem.to_json()``).

    Raises:
        TypeError, ValueError: it is not a valid system.
    """
    if not isinstance(value, dict):
        raise TypeError(f"expected a system object, got {value!r}")
    return ServedSystem.from_json(value)


def read_system_choice(value: Any) -> dict[str, str] | None:
    """Which promotion served and why (``SystemInForce.to_json()``); None when the night did not say.

    Raises:
        TypeError, KeyError: it is not a choice object.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"expected a system choice object, got {value!r}")
    return {key: str(value[key]) for key in ("version", "trained_through", "rule", "reason")}


def read_system_champion(lake: Lake) -> dict[str, Any] | None:
    """The ``system`` champion pointer (the system in force), or None before the first promotion.

    Raises:
        ReportInputError: the pointer is malformed.
    """
    rel = LakePaths.champion(SYSTEM)
    pointer = _read_pointer(lake, rel)
    if pointer is None:
        return None
    with reading(lake.uri(rel)):
        system = read_system(pointer["system"])
        return {
            "version": str(pointer["version"]),
            "name": pointer.get("name"),
            "label": system.label,
            "system": system.to_json(),
            "metrics": as_numbers(pointer.get("metrics") or {}),
            "previous_version": pointer.get("previous_version"),
            "promoted_at": pointer.get("promoted_at"),
        }


def features_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Row counts, SQL timings and quarantine counts from the ``build_features`` fact."""
    quarantined: dict[str, dict[str, int]] = {}
    checked: dict[str, dict[str, int]] = {}
    for table, counts in sorted(fact.get("quality", {}).items()):
        counts = {str(reason): as_int(n) for reason, n in sorted(counts.items())}
        bad = {reason: n for reason, n in counts.items() if reason != "ok" and n}
        quarantined[table] = bad
        checked[table] = {"ok": counts.get("ok", 0), "bad": sum(bad.values())}
    by_reason: dict[str, int] = {}
    for bad in quarantined.values():
        for reason, n in bad.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return {
        "rows": {str(k): as_int(v) for k, v in sorted(fact.get("rows", {}).items())},
        "seconds": as_numbers(fact.get("seconds", {})),
        "quality": {
            "quarantined": quarantined,
            "by_reason": dict(sorted(by_reason.items())),
            "checked": checked,
            "bad_fraction": as_numbers(fact.get("bad_fraction", {})),
            "total_quarantined": sum(by_reason.values()),
        },
    }


def index_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Recall, size and build time of the item index from the ``build_index`` fact."""
    return {
        "recall": as_float(fact["recall"]),
        "recall_k": as_int(fact["recall_k"]) if "recall_k" in fact else None,
        "n_items": as_int(fact["n_items"]),
        "build_seconds": as_float(fact.get("build_seconds")),
        "model_version": fact.get("model_version"),
    }


def embed_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Items embedded and throughput from the ``embed_items`` fact."""
    return {"n_items": as_int(fact["n_items"]), "items_per_s": as_float(fact.get("items_per_s"))}


def inputs_metrics(fact: dict[str, Any]) -> dict[str, int]:
    """Rows per serving input from the ``export_inputs`` fact."""
    return {str(k): as_int(v) for k, v in sorted(fact["rows"].items())}


def publish_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Users, rows and stage timings summed over shards from the ``publish_candidates`` fact."""
    stage_seconds: dict[str, float] = {}
    shard_seconds: dict[str, float] = {}
    for shard, result in sorted(fact.get("shards", {}).items(), key=lambda kv: int(kv[0])):
        seconds = as_numbers(result.get("seconds", {}))
        for stage, value in seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + (value or 0.0)
        shard_seconds[str(shard)] = round(sum(v or 0.0 for v in seconds.values()), 6)
    return {
        "published": bool(fact.get("published", False)),
        "num_shards": as_int(fact["num_shards"]),
        "users": as_int(fact["users"]),
        "rows": as_int(fact["rows"]),
        "stage_seconds": {k: round(v, 6) for k, v in sorted(stage_seconds.items())},
        "shard_seconds": shard_seconds,
    }


def digest_metrics(fact: dict[str, Any]) -> dict[str, Any]:
    """Messages written and users skipped from the ``publish_digests`` fact."""
    return {
        "dry_run": bool(fact.get("dry_run", False)),
        "users_total": as_int(fact["users_total"]),
        "messages_written": as_int(fact["messages_written"]),
        "skipped": {str(k): as_int(v) for k, v in sorted(fact.get("skipped", {}).items())},
        "seconds": as_float(fact.get("seconds")),
    }
