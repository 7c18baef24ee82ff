"""Every number of the run report of ``ds``: the JSON-ready dict written to ``metrics.json``.

Gathers the job facts and the system champion (``report.facts``), the training run (``report.selection``)
and the published candidates (``report.candidates``), and adds stage timings, row counts and the headline.
A night without training has no training fact: its system section shows the system in force. No wall
clock is read.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pipelines.core.jobs import (
    BUILD_FEATURES,
    BUILD_INDEX,
    EMBED_ITEMS,
    EXPORT_INPUTS,
    NIGHT_FACTS,
    PUBLISH_CANDIDATES,
    PUBLISH_DIGESTS,
    TRAIN_SYSTEM,
    Job,
)
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.delivery.report.candidates import COVERAGE_TOP, candidates_metrics
from pipelines.delivery.report.facts import (
    digest_metrics,
    embed_metrics,
    features_metrics,
    index_metrics,
    inputs_metrics,
    publish_metrics,
    read_facts,
    read_system,
    read_system_champion,
    reading,
)
from pipelines.delivery.report.selection import system_training


def collect_metrics(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """Every number of the report of ``ds``, as the JSON-ready dict written to ``metrics.json``.

    Raises:
        ReportInputError: an input is malformed (the message names it).
    """
    facts = read_facts(lake, ds)
    with reading(lake.uri(LakePaths.candidates(ds))):
        candidates = candidates_metrics(lake, ds)
    system = _system_section(lake, ds, facts, candidates.pop("system", None))

    sections: dict[Job, Any] = {}
    skipped: dict[str, str] = {}
    for job, reader in (
        (BUILD_FEATURES, features_metrics),
        (BUILD_INDEX, index_metrics),
        (EMBED_ITEMS, embed_metrics),
        (EXPORT_INPUTS, inputs_metrics),
        (PUBLISH_CANDIDATES, publish_metrics),
        (PUBLISH_DIGESTS, digest_metrics),
    ):
        if job.name in facts and facts[job.name].get("skipped") is True:
            skipped[job.name] = str(facts[job.name].get("reason", "skipped"))
            sections[job] = None
        elif job.name in facts:
            with reading(_fact_uri(lake, ds, job)):
                sections[job] = reader(facts[job.name])
        else:
            sections[job] = None

    metrics: dict[str, Any] = {
        "ds": ds.isoformat(),
        "facts": {
            "present": sorted(facts),
            "missing": [job.name for job in NIGHT_FACTS if job.name not in facts],
            "skipped": skipped,
        },
        "system": system,
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
        "timings": _timings(sections),
    }
    metrics["headline"] = _headline(metrics)
    return metrics


def _fact_uri(lake: Lake, ds: dt.date, job: Job) -> str:
    return lake.uri(LakePaths.fact(ds, job.name))


def _system_section(
    lake: Lake, ds: dt.date, facts: dict[str, dict[str, Any]], published: Any
) -> dict[str, Any]:
    """The system served on ``ds`` (named by the published candidates, else the publish fact, else the
    system champion), the champion, and the training run of ``ds`` when there was one."""
    champion = read_system_champion(lake)
    publish = facts.get(PUBLISH_CANDIDATES.name)
    served: dict[str, Any] | None = None
    for source, what, value in (
        ("published candidates", lake.uri(LakePaths.candidates(ds)), published),
        ("publish fact", _fact_uri(lake, ds, PUBLISH_CANDIDATES), (publish or {}).get("system")),
    ):
        if value is not None:
            with reading(what):
                system = read_system(value)
            served = {"source": source, "label": system.label, "system": system.to_json()}
            break
    if served is None and champion is not None:
        served = {"source": "system champion", "label": champion["label"], "system": champion["system"]}
    training = None
    if TRAIN_SYSTEM.name in facts:
        with reading(_fact_uri(lake, ds, TRAIN_SYSTEM)):
            training = system_training(facts[TRAIN_SYSTEM.name])
    return {"served": served, "champion": champion, "trained": training is not None, "training": training}


def metrics_json(metrics: dict[str, Any]) -> bytes:
    """The bytes of ``metrics.json``: sorted keys, so equal metrics give equal bytes."""
    return (json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _timings(sections: dict[Job, Any]) -> dict[str, Any]:
    features = sections[BUILD_FEATURES]
    publish = sections[PUBLISH_CANDIDATES]
    index = sections[BUILD_INDEX]
    digests = sections[PUBLISH_DIGESTS]
    nightly: dict[str, float | None] = {}
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


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    candidates = metrics["candidates"]
    catalog = candidates.get("catalog", {})
    quality = metrics["quality"]
    served, training = metrics["system"]["served"], metrics["system"]["training"]
    selection = training["selection"] if training else None
    served_row = next(row for row in selection["test"] if row["served"]) if selection else None
    return {
        "candidate_users": candidates.get("users"),
        "candidate_rows": candidates.get("rows"),
        f"coverage_top_{COVERAGE_TOP}": catalog.get(f"coverage_top_{COVERAGE_TOP}"),
        "index_recall": metrics["index"]["recall"] if metrics["index"] else None,
        "quarantined_rows": quality["total_quarantined"] if quality else None,
        "digest_messages": metrics["rows"]["digest_messages"],
        "served_system": served["label"] if served else None,
        "system_promoted": training["promoted"] if training else None,
        "selection_metric": selection["metric"] if selection else None,
        "served_on_test_night": served_row["intervals"][selection["metric"]] if selection else None,
    }
