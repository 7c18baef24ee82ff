"""Every number of the run report of ``ds``: the JSON-ready dict written to ``metrics.json``.

Gathers the job facts and model pointers (``report.facts``) and the published candidates
(``report.candidates``), and adds stage timings, row counts and the headline. A night without training
has no training facts: its model sections show the champion in force. No wall clock is read.
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
    TRAIN_RANKER,
    TRAIN_TWO_TOWER,
    Job,
)
from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, TWO_TOWER, LakePaths
from pipelines.delivery.report.candidates import COVERAGE_TOP, candidates_metrics
from pipelines.delivery.report.facts import (
    digest_metrics,
    embed_metrics,
    features_metrics,
    index_metrics,
    inputs_metrics,
    publish_metrics,
    ranker_training,
    read_champion,
    read_decision,
    read_facts,
    reading,
    two_tower_training,
)


def collect_metrics(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """Every number of the report of ``ds``, as the JSON-ready dict written to ``metrics.json``.

    Raises:
        ReportInputError: an input is malformed (the message names it).
    """
    facts = read_facts(lake, ds)

    def fact_uri(job: Job) -> str:
        return lake.uri(LakePaths.fact(ds, job.name))

    with reading(lake.uri(LakePaths.candidates(ds))):
        candidates = candidates_metrics(lake, ds)
    served = candidates.pop("served", {})
    publish = facts.get(PUBLISH_CANDIDATES.name)
    if publish is not None:
        with reading(fact_uri(PUBLISH_CANDIDATES)):
            for kind in (TWO_TOWER, RANKER):
                served.setdefault(kind, (publish.get("system") or {}).get(f"{kind}_version"))

    models: dict[str, Any] = {}
    for kind, job, training in (
        (TWO_TOWER, TRAIN_TWO_TOWER, two_tower_training),
        (RANKER, TRAIN_RANKER, ranker_training),
    ):
        fact = facts.get(job.name)
        section: dict[str, Any] = {
            "trained": fact is not None,
            "champion": read_champion(lake, kind),
            "served": served.get(kind),
            "training": None,
        }
        if fact is not None:
            with reading(fact_uri(job)):
                section["training"] = training(fact)
            section["training"]["decision"] = read_decision(lake, kind, section["training"]["version"])
        models[kind] = section

    sections: dict[Job, Any] = {}
    for job, reader in (
        (BUILD_FEATURES, features_metrics),
        (BUILD_INDEX, index_metrics),
        (EMBED_ITEMS, embed_metrics),
        (EXPORT_INPUTS, inputs_metrics),
        (PUBLISH_CANDIDATES, publish_metrics),
        (PUBLISH_DIGESTS, digest_metrics),
    ):
        if job.name in facts:
            with reading(fact_uri(job)):
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


def metrics_json(metrics: dict[str, Any]) -> bytes:
    """The bytes of ``metrics.json``: sorted keys, so equal metrics give equal bytes."""
    return (json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


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
