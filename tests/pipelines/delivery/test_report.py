"""Run report: hand-built facts, champions and a tiny published candidates dataset in a temporary lake."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from pipelines.core import jobs
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES
from pipelines.delivery.report.build import build_report
from pipelines.delivery.report.facts import ReportInputError
from pipelines.delivery.report.metrics import collect_metrics
from pipelines.jobs import run

DS = dt.date(2026, 11, 22)
TT_VERSION = "2026-11-22-20261123T021501123456Z-1f2e3d4c"
TT_CHAMPION = "2026-11-20-20261121T021501123456Z-aaaaaaaa"
RANKER_VERSION = "2026-11-22-20261123T021601123456Z-2e3d4c5b"
HOSTILE_VERSION = "2026-11-01-<script>alert('pwned')</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTION_TITLES = (
    "Models in force and promotion decisions",
    "Two-tower retrieval",
    "Ranker",
    "Published candidates",
    "Stage timings and row counts",
    "Data quality",
    "Digests",
    "Run facts",
)


def retrieval_metrics(recall: tuple[float, float, float]) -> dict[str, float]:
    r10, r50, r100 = recall
    return {
        "recall_at_10": r10,
        "recall_at_50": r50,
        "recall_at_100": r100,
        "ndcg_at_10": r10 / 2,
        "ndcg_at_50": r50 / 2,
        "ndcg_at_100": r100 / 2,
        "coverage_at_10": 0.1,
        "coverage_at_50": 0.2,
        "coverage_at_100": 0.3,
        "n_users": 40.0,
    }


FEATURES_FACT = {
    "ds": DS,
    "rows": {"checked_events": 100, "stg_events": 95},
    "quality": {
        "raw_events": {"ok": 95, "null_key": 3, "duplicate": 2},
        "raw_items": {"ok": 20},
        "raw_users": {"ok": 4, "malformed_value": 1},
    },
    "bad_fraction": {"raw_events": 0.05, "raw_items": 0.0, "raw_users": 0.2},
    "seconds": {"checked_events": 0.5, "stg_events": 0.25},
}
TWO_TOWER_FACT = {
    "version": TT_VERSION,
    "promoted": False,
    "reason": f"recall_at_50 0.3000 trails champion {TT_CHAMPION} (0.3500) by more than the tolerance 0.0100",
    "metrics": {
        "two_tower": retrieval_metrics((0.2, 0.3, 0.5)),
        "most_popular": retrieval_metrics((0.1, 0.25, 0.4)),
        "item_knn": retrieval_metrics((0.15, 0.2, 0.45)),
    },
    "champion_metrics": retrieval_metrics((0.22, 0.35, 0.55)),
    "loss_history": [3.0, 2.0, 1.5],
    "examples_per_second": 1000.0,
    "n_train_examples": 500,
}
RANKER_FACT = {
    "version": RANKER_VERSION,
    "promoted": True,
    "reason": "first ranker model: ndcg_at_10 0.7000 >= floor 0.5000",
    "metrics": {
        "ndcg_at_5": 0.65,
        "ndcg_at_10": 0.7,
        "retrieval_ndcg_at_5": 0.5,
        "retrieval_ndcg_at_10": 0.55,
        "logged_ndcg_at_5": 0.45,
        "logged_ndcg_at_10": 0.5,
        "map": 0.6,
        "fit_seconds": 1.25,
    },
    "champion_metrics": None,
    "two_tower_version": TT_CHAMPION,
}
PUBLISH_FACT = {
    "published": True,
    "num_shards": 2,
    "users": 3,
    "rows": 26,
    "top_k": 12,
    "system": {"retriever": "two_tower", "two_tower_version": TT_CHAMPION, "ranker_version": RANKER_VERSION},
    "shards": {
        "0": {"users": 2, "rows": 23, "seconds": {"load": 1.0, "rank": 0.5}},
        "1": {"users": 1, "rows": 3, "seconds": {"load": 2.0, "rank": 0.25}},
    },
}
OTHER_FACTS = {
    "export_inputs": {"rows": {"items": 20, "users": 4}},
    "embed_items": {"n_items": 20, "items_per_s": 400.0, "model_version": TT_CHAMPION},
    "build_index": {"n_items": 20, "recall": 0.98, "recall_k": 10, "build_seconds": 0.75},
    "publish_digests": {
        "ds": DS,
        "dry_run": False,
        "users_total": 4,
        "messages_written": 2,
        "skipped": {"opted_out": 1, "not_due": 1},
        "seconds": 0.5,
    },
}


def write_fact(lake: Lake, job: str, fact: Any) -> None:
    lake.write_json(LakePaths.fact(DS, job), fact)


def write_champion(lake: Lake, kind: str, version: str, metric: str, metrics: dict[str, float]) -> None:
    lake.write_pointer(
        LakePaths.champion(kind),
        {
            "kind": kind,
            "version": version,
            "metric": metric,
            "value": metrics[metric],
            "metrics": metrics,
            "previous_version": None,
            "promoted_at": "2026-11-21T02:15:01+00:00",
        },
        if_generation_match=None,
    )


def candidate_rows() -> pa.Table:
    """Three users' lists over catalog items p01..p20 (p21 is not in the catalog); score = -rank.

    u1: ranks 1..12 on p01..p12, rank 8 is the exploration slot; u2: ranks 1..11 on p05..p15, all ranked;
    u3: a short fallback list of 3 (p01, p16, p21) without retrieval scores.
    """
    rows: list[dict[str, Any]] = []
    for rank in range(1, 13):
        explore = rank == 8
        rows.append(("u1", rank, f"p{rank:02d}", "explore" if explore else "ranked", not explore))
    for rank in range(1, 12):
        rows.append(("u2", rank, f"p{rank + 4:02d}", "ranked", True))
    for rank, item in enumerate(("p01", "p16", "p21"), start=1):
        rows.append(("u3", rank, item, "fallback", False))
    return pa.Table.from_pylist(
        [
            {
                "user_id": user,
                "rank": rank,
                "item_id": item,
                "score": -float(rank),
                "retrieval_score": 0.5 if retrieved else None,
                "reason": reason,
            }
            for user, rank, item, reason, retrieved in rows
        ],
        schema=CANDIDATES,
    )


def publish_inputs_and_candidates(lake: Lake) -> None:
    inputs = LakePaths.inputs(DS)
    staging = lake.begin_publish(inputs)
    lake.write_parquet(f"{staging}/items.parquet", pa.table({"item_id": [f"p{n:02d}" for n in range(1, 21)]}))
    lake.write_parquet(f"{staging}/users.parquet", pa.table({"user_id": ["u1", "u2", "u3", "u4"]}))
    lake.publish(inputs, staging, ["items.parquet", "users.parquet"])
    dataset = LakePaths.candidates(DS)
    staging = lake.begin_publish(dataset)
    table = candidate_rows()
    lake.write_parquet(f"{staging}/shard=000.parquet", table.slice(0, 23))
    lake.write_parquet(f"{staging}/shard=001.parquet", table.slice(23))
    lake.publish(
        dataset,
        staging,
        ["shard=000.parquet", "shard=001.parquet"],
        metadata={
            "system": {
                "retriever": "two_tower",
                "two_tower_version": TT_CHAMPION,
                "ranker_version": RANKER_VERSION,
            }
        },
    )


def full_night(lake: Lake) -> None:
    write_fact(lake, "build_features", FEATURES_FACT)
    write_fact(lake, "train_two_tower", TWO_TOWER_FACT)
    write_fact(lake, "train_ranker", RANKER_FACT)
    write_fact(lake, "publish_candidates", PUBLISH_FACT)
    for job, fact in OTHER_FACTS.items():
        write_fact(lake, job, fact)
    write_champion(lake, "two_tower", TT_CHAMPION, "recall_at_50", retrieval_metrics((0.22, 0.35, 0.55)))
    write_champion(lake, "ranker", RANKER_VERSION, "ndcg_at_10", RANKER_FACT["metrics"])
    lake.write_json(
        f"{LakePaths.model_dir('two_tower', TT_VERSION)}/decision.json",
        {
            "kind": "two_tower",
            "version": TT_VERSION,
            "promoted": False,
            "reason": TWO_TOWER_FACT["reason"],
            "metric": "recall_at_50",
            "value": 0.3,
            "champion_version": TT_CHAMPION,
            "champion_value": 0.35,
            "floor": 0.02,
            "tolerance": 0.01,
        },
    )
    publish_inputs_and_candidates(lake)


def published(lake: Lake, name: str) -> bytes:
    (path,) = [p for p in lake.manifest_files(LakePaths.reports(DS)) if p.endswith("/" + name)]
    return lake.read_bytes(path)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("lake")))
    full_night(lake)
    build_report(lake, DS)
    return lake


def test_report_is_published_with_a_manifest(night: Lake) -> None:
    manifest = night.read_manifest(LakePaths.reports(DS))
    assert manifest["files"] == ["metrics.json", "report.html"]
    assert manifest["metadata"]["missing_facts"] == []
    assert published(night, "report.html").startswith(b"<!DOCTYPE html>")


def test_metrics_hold_the_hand_computed_numbers(night: Lake) -> None:
    metrics = json.loads(published(night, "metrics.json"))
    candidates = metrics["candidates"]
    assert (candidates["users"], candidates["rows"]) == (3, 26)  # 12 + 11 + 3 rows
    # Top-10 items: u1 p01..p10 (10), u2 adds p11..p14 (4), u3 adds p16 (p01 repeats, p21 is off-catalog)
    # -> 15 catalog items of 20 = 0.75. Whole lists add p15 -> 16 / 20 = 0.8; p21 is the one outsider.
    catalog = candidates["catalog"]
    assert catalog["size"] == 20
    assert (catalog["distinct_items_top_10"], catalog["coverage_top_10"]) == (15, 0.75)
    assert (catalog["distinct_items"], catalog["coverage"]) == (16, 0.8)
    assert catalog["listed_items_not_in_catalog"] == 1
    assert candidates["users_without_list"] == 1  # u4 is in the inputs but has no list
    assert candidates["list_length"] == {
        "min": 3,
        "median": 11.0,
        "mean": 26 / 3,
        "max": 12,
        "counts": {"3": 1, "11": 1, "12": 1},
    }
    # ranked: 11 of u1 + 11 of u2 = 22; explore: u1's rank 8; fallback: u3's 3 rows.
    assert candidates["reasons"] == {"explore": 1, "fallback": 3, "ranked": 22, "retrieved": 0}
    # score = -rank: sum = -(78 + 66 + 6) = -150 over 26 rows. Sorted, the 13th and 14th values are -6 and
    # -5 (one -12, two each of -11..-4, three each of -3..-1), so the median is -5.5.
    score = candidates["score"]
    assert (score["count"], score["min"], score["max"]) == (26, -12.0, -1.0)
    assert score["mean"] == pytest.approx(-150 / 26)
    assert score["quantiles"]["p50"] == -5.5
    assert sum(score["histogram"]["counts"]) == 26
    assert candidates["retrieval_score"]["count"] == 22  # explore and fallback rows have no retrieval score

    quality = metrics["quality"]
    assert quality["total_quarantined"] == 6  # 3 + 2 on events, 1 on users
    assert quality["by_reason"] == {"duplicate": 2, "malformed_value": 1, "null_key": 3}
    assert quality["checked"]["raw_events"] == {"ok": 95, "bad": 5}

    timings = metrics["timings"]
    assert timings["features_sql_total"] == 0.75  # 0.5 + 0.25
    # Shard stages summed over shards: load 1.0 + 2.0, rank 0.5 + 0.25; shard totals 1.5 and 2.25.
    assert timings["nightly"] == {
        "ranker fit": 1.25,
        "index build": 0.75,
        "shards: load": 3.0,
        "shards: rank": 0.75,
        "digests render": 0.5,
    }
    assert timings["shard_totals"] == {"0": 1.5, "1": 2.25}

    two_tower = metrics["models"]["two_tower"]
    assert two_tower["trained"] and not two_tower["training"]["promoted"]
    assert two_tower["served"] == TT_CHAMPION
    assert two_tower["champion"]["version"] == TT_CHAMPION
    assert two_tower["training"]["decision"]["champion_value"] == 0.35
    assert two_tower["training"]["loss_history"] == {"loss": [3.0, 2.0, 1.5]}
    ranker = metrics["models"]["ranker"]["training"]
    assert ranker["evaluation"]["logged_ndcg_at_10"] == 0.5
    assert metrics["headline"]["coverage_top_10"] == 0.75
    assert metrics["rows"]["digest_messages"] == 2


def test_html_is_self_contained_with_png_plots(night: Lake) -> None:
    html = published(night, "report.html").decode()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # loss, recall, ranker, scores, list lengths, coverage, timings, quarantine
    assert len(images) == 8
    for encoded in images:
        png = base64.b64decode(encoded)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            assert image.width > 300 and image.height > 150
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    # Reasons are data: the "&" and ">=" of the ranker's decision come out escaped.
    assert "ndcg_at_10 0.7000 &gt;= floor 0.5000" in html


def test_rerun_keeps_facts_and_writes_the_same_bytes(night: Lake) -> None:
    before = {name: published(night, name) for name in ("report.html", "metrics.json")}
    first_staging = night.read_manifest(LakePaths.reports(DS))["staging"]
    build_report(night, DS)
    dataset = LakePaths.reports(DS)
    assert night.read_manifest(dataset)["staging"] != first_staging
    assert {name: published(night, name) for name in before} == before
    # Garbage collection removed the older run= folder and nothing else.
    assert [n for n in night.ls(dataset) if n.startswith("run=")] == [
        f"run={night.read_manifest(dataset)['staging']}"
    ]
    assert night.ls(f"{dataset}/facts") == sorted(
        f"{job}.json"
        for job in ("build_features", "train_two_tower", "train_ranker", "publish_candidates", *OTHER_FACTS)
    )


def test_night_without_training_shows_the_champions(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    features = {
        **FEATURES_FACT,
        # A "$" pair would start matplotlib mathtext and "\nope" is no symbol: labels must stay plain text.
        "quality": {"raw_events": {"ok": 10, "odd $\\nope$ <b>": 2}},
    }
    write_fact(lake, "build_features", features)
    write_champion(lake, "two_tower", HOSTILE_VERSION, "recall_at_50", retrieval_metrics((0.2, 0.3, 0.5)))

    summary = build_report(lake, DS)

    assert summary.missing_facts == [
        "train_two_tower",
        "train_ranker",
        "export_inputs",
        "embed_items",
        "build_index",
        "publish_candidates",
        "publish_digests",
    ]
    metrics = json.loads(published(lake, "metrics.json"))
    assert metrics["models"]["two_tower"]["trained"] is False
    assert metrics["models"]["two_tower"]["champion"]["version"] == HOSTILE_VERSION
    assert metrics["models"]["ranker"]["champion"] is None
    assert metrics["candidates"] == {"published": False}
    html = published(lake, "report.html").decode()
    assert "No two-tower training on this date" in html
    assert "No ranker training on this date" in html
    assert "No candidates were published for this date" in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "odd $\\nope$ &lt;b&gt;" in html
    # quarantine and timings only
    assert html.count("data:image/png;base64,") == 2


def test_malformed_fact_names_the_file(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    write_fact(lake, "train_ranker", {**RANKER_FACT, "metrics": {"ndcg_at_10": "high"}})
    with pytest.raises(ReportInputError, match=r"facts/train_ranker\.json is malformed.*'high'"):
        collect_metrics(lake, DS)
    lake.write_bytes(LakePaths.fact(DS, "build_index"), b"{not json")
    with pytest.raises(ReportInputError, match=r"facts/build_index\.json is not valid JSON"):
        collect_metrics(lake, DS)


def test_write_report_job_publishes_on_an_empty_night(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NIGHTFEED_LAKE", raising=False)
    monkeypatch.delenv("NIGHTFEED_CONFIG", raising=False)
    result = run(jobs.WRITE_REPORT, DS)
    assert result["missing_facts"] == [
        "build_features",
        "train_two_tower",
        "train_ranker",
        "export_inputs",
        "embed_items",
        "build_index",
        "publish_candidates",
        "publish_digests",
    ]
    assert Lake(str(tmp_path / "lake")).read_manifest(LakePaths.reports(DS))["files"] == [
        "metrics.json",
        "report.html",
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium")
def test_report_renders_in_headless_chromium(night: Lake, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_bytes(published(night, "report.html"))
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for title in SECTION_TITLES:
        assert f">{title}" in done.stdout, title
    assert done.stdout.count("<img ") == 8
