"""Run report: hand-built facts, the system champion and a tiny published candidates dataset in a temporary
lake."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import shutil
import subprocess
from html import unescape as html_unescape
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
from tests.pipelines.delivery.system_facts import (
    ALS,
    CANDIDATE,
    CHAMPION_SYSTEM,
    NO_DIVERSIFY,
    NO_RANKER,
    POPULAR,
    SYSTEM_CHAMPION,
    TT_CHAMPION,
    kept_fact,
    ranker_worse_fact,
)

DS = dt.date(2026, 11, 22)
HOSTILE_VERSION = "2026-11-01-<script>alert('pwned')</script>"
# Which promotion served the night and why, as the nightly job's shards record it.
SYSTEM_CHOICE = {
    "version": SYSTEM_CHAMPION,
    "trained_through": "2026-11-21",
    "rule": "as_of",
    "reason": f"in force on 2026-11-22 (the latest promotion trained on data up to 2026-11-22): "
    f"{SYSTEM_CHAMPION}",
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTION_TITLES = (
    "System selection",
    "Published candidates",
    "Stage timings and row counts",
    "Data quality",
    "Digests",
    "Run facts",
)


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
PUBLISH_FACT = {
    "published": True,
    "num_shards": 2,
    "users": 3,
    "rows": 26,
    "top_k": 12,
    "system": CHAMPION_SYSTEM.to_json(),
    "system_choice": SYSTEM_CHOICE,
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


def write_system_champion(lake: Lake, version: str, system: dict[str, Any], name: str) -> None:
    """The ``system`` champion pointer as ``registry.promote`` writes it for ``pipelines.jobs.training``."""
    lake.write_pointer(
        LakePaths.champion("system"),
        {
            "kind": "system",
            "version": version,
            "system": system,
            "label": "ignored: the report labels the system itself",
            "name": name,
            "metrics": {"recall_at_50": 0.38, "ndcg_at_10": 0.2, "n_users": 38.0},
            "decision": {},
            "previous_version": None,
            "promoted_at": "2026-11-21T02:17:01+00:00",
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
    lake.write_parquet(f"{staging}/users/shard=000.parquet", pa.table({"user_id": ["u1", "u2", "u3", "u4"]}))
    files = ["items.parquet", "users/shard=000.parquet"]
    lake.publish(inputs, staging, files, metadata={"rows": {"items": 20, "users": 4}, "num_shards": 1})
    dataset = LakePaths.candidates(DS)
    staging = lake.begin_publish(dataset)
    table = candidate_rows()
    lake.write_parquet(f"{staging}/shard=000.parquet", table.slice(0, 23))
    lake.write_parquet(f"{staging}/shard=001.parquet", table.slice(23))
    lake.publish(
        dataset,
        staging,
        ["shard=000.parquet", "shard=001.parquet"],
        metadata={"system": CHAMPION_SYSTEM.to_json(), "system_choice": SYSTEM_CHOICE},
    )


def full_night(lake: Lake) -> None:
    write_fact(lake, "build_features", FEATURES_FACT)
    write_fact(lake, "train_system", kept_fact())
    write_fact(lake, "publish_candidates", PUBLISH_FACT)
    for job, fact in OTHER_FACTS.items():
        write_fact(lake, job, fact)
    write_system_champion(
        lake, SYSTEM_CHAMPION, CHAMPION_SYSTEM.to_json(), "two-tower + ranker (impressions)"
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
        "index build": 0.75,
        "shards: load": 3.0,
        "shards: rank": 0.75,
        "digests render": 0.5,
    }
    assert timings["shard_totals"] == {"0": 1.5, "1": 2.25}

    system = metrics["system"]
    assert system["served"] == {
        "source": "published candidates",
        "label": "two-tower + ranker + diversified",
        "system": CHAMPION_SYSTEM.to_json(),
        "choice": SYSTEM_CHOICE,
    }
    assert system["champion"]["version"] == SYSTEM_CHAMPION
    assert system["champion"]["label"] == "two-tower + ranker + diversified"
    training = system["training"]
    assert system["trained"] and not training["promoted"] and not training["skipped"]
    selection = training["selection"]
    assert selection["metric"] == "recall_at_50"
    assert selection["chosen"] == CANDIDATE
    # Best recall@50 first: champion 0.40, without diversification 0.36, candidate 0.34, ALS 0.32,
    # without the ranker 0.30, most popular 0.20.
    assert [(r["name"], r["role"], r["served"], r["chosen"]) for r in selection["test"]] == [
        ("champion", "champion", True, False),
        (NO_DIVERSIFY, "stage", False, False),
        (CANDIDATE, "candidate", False, True),
        (ALS, "baseline", False, False),
        (NO_RANKER, "stage", False, False),
        (POPULAR, "baseline", False, False),
    ]
    assert selection["test"][3]["label"] == "als + age<=7d"
    assert selection["test"][2]["intervals"]["recall_at_50"] == {"mean": 0.34, "low": 0.31, "high": 0.37}
    # Paired differences: the served champion minus every other system, in the table's order.
    differences = selection["differences_from_served"]
    assert [d["name"] for d in differences] == [NO_DIVERSIFY, CANDIDATE, ALS, NO_RANKER, POPULAR]
    assert differences[1]["differences"]["recall_at_50"] == {"mean": 0.06, "low": 0.03, "high": 0.09}
    plan = selection["plan"]
    assert (plan["validation"], plan["test"], plan["window_days"]) == (
        ["2026-11-20", "2026-11-21"],
        "2026-11-22",
        1,
    )
    assert [(n["role"], n["eval_users"], n["relevant_pairs"]) for n in plan["nights"]] == [
        ("validation", 40, 60),
        ("validation", 41, 61),
        ("test", 42, 62),
    ]
    assert plan["seconds"]["total"] == 39.75
    ranker_step = next(t for t in selection["trials"] if t["step"] == "two_tower: ranker")
    assert [(o["metrics"]["recall_at_50"], o["chosen"]) for o in ranker_step["options"]] == [
        (0.35, True),
        (0.33, False),
        (0.31, False),
    ]
    assert metrics["headline"]["coverage_top_10"] == 0.75
    assert metrics["rows"]["digest_messages"] == 2
    assert {
        key: metrics["headline"][key] for key in ("served_system", "system_promoted", "selection_metric")
    } == {
        "served_system": "two-tower + ranker + diversified",
        "system_promoted": False,
        "selection_metric": "recall_at_50",
    }
    assert metrics["headline"]["served_on_test_night"] == {"mean": 0.4, "low": 0.37, "high": 0.43}


def test_a_kept_champion_is_said_with_the_losing_check(night: Lake) -> None:
    metrics = json.loads(published(night, "metrics.json"))
    training = metrics["system"]["training"]
    decision = training["selection"]["decision"]
    assert (decision["promoted"], decision["served"]) == (False, "champion")
    lost = [c for c in decision["checks"] if not c["passed"]]
    assert lost == [
        {
            "challenger": CANDIDATE,
            "against": "champion",
            "metric": "recall_at_50",
            "mean": -0.06,
            "low": -0.09,
            "high": -0.03,
            "passed": False,
        }
    ]
    verdict = (
        "kept the champion, two-tower + ranker + diversified: two-tower + ranker + diversified + age&lt;=7d "
        "lost to the champion on recall@50: -0.060 [-0.090, -0.030]"
    )
    assert training["verdict"] == html_unescape(verdict)
    html = published(night, "report.html").decode()
    assert f'<p class="verdict warn">{verdict}</p>' in html
    assert "not promoted, champion kept" in html
    assert f"System as of the night: {html_unescape(SYSTEM_CHOICE['reason'])}" in html_unescape(html)
    # The stages of the candidate: its ranker adds recall on the test night, its diversification costs.
    ranker, diversification = training["selection"]["stages"]
    assert (ranker["stage"], ranker["used"], ranker["worse"]) == ("ranker", True, False)
    assert ranker["test"]["without"] == NO_RANKER
    assert ranker["validation"]["without_value"] == 0.31 and ranker["validation"]["with_value"] == 0.35
    assert (diversification["used"], diversification["worse"]) == (True, True)
    assert diversification["test"]["differences"]["recall_at_50"] == {
        "mean": -0.02,
        "low": -0.05,
        "high": 0.01,
    }
    assert diversification["sentence"] == (
        "diversification used: on the test night it costs recall@50 -0.020 [-0.050, +0.010] (with it minus "
        "without); lists without it scored 0.3700 vs 0.3800 on the validation nights (recall@50)"
    )
    assert "ranker used: on the test night it adds recall@50 +0.040 [+0.010, +0.070]" in html


def test_a_ranker_that_made_lists_worse_is_not_used_and_the_report_says_why(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    fact, promoted = ranker_worse_fact()
    write_fact(lake, "train_system", fact)
    write_system_champion(lake, fact["version"], promoted, "two-tower")

    build_report(lake, DS)

    metrics = json.loads(published(lake, "metrics.json"))
    system = metrics["system"]
    # The promoted system, served from now on, has no ranker.
    assert system["served"]["source"] == "system champion"
    assert system["served"]["system"]["ranker_version"] is None
    assert system["served"]["label"] == "two-tower"
    training = system["training"]
    assert (
        training["promoted"] and training["verdict"] == "promoted two-tower: it did not lose to most-popular"
    )
    ranker = training["selection"]["stages"][0]
    assert (ranker["stage"], ranker["used"], ranker["worse"], ranker["test"]) == ("ranker", False, True, None)
    # Lists with the better of the two rankers scored 0.35, without one 0.40: a cost of 0.05.
    assert ranker["validation"]["with"] == "two-tower + ranker (impressions)"
    assert ranker["validation"]["difference"] == pytest.approx(-0.05)
    sentence = (
        "ranker not used: lists without it scored 0.4000 vs 0.3500 on the validation nights (recall@50)"
    )
    assert ranker["sentence"] == sentence
    html = published(lake, "report.html").decode()
    assert sentence in html
    assert "lists score lower with it" in html


def test_html_is_self_contained_with_png_plots(night: Lake) -> None:
    html = published(night, "report.html").decode()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # test night, scores, list lengths, coverage, timings, quarantine
    assert len(images) == 6
    for encoded in images:
        png = base64.b64decode(encoded)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            assert image.width > 300 and image.height > 150
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    # Reasons are data: the "<=" of the system names in the gate's reason come out escaped.
    assert f"{CANDIDATE} lost to the champion".replace("<", "&lt;") in html


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
        f"{job}.json" for job in ("build_features", "train_system", "publish_candidates", *OTHER_FACTS)
    )


def test_night_without_training_shows_the_champion(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    features = {
        **FEATURES_FACT,
        # A "$" pair would start matplotlib mathtext and "\nope" is no symbol: labels must stay plain text.
        "quality": {"raw_events": {"ok": 10, "odd $\\nope$ <b>": 2}},
    }
    write_fact(lake, "build_features", features)
    hostile = {**CHAMPION_SYSTEM.to_json(), "two_tower_version": HOSTILE_VERSION}
    write_system_champion(lake, SYSTEM_CHAMPION, hostile, "<b>two-tower</b>")

    summary = build_report(lake, DS)

    assert summary.missing_facts == [
        "train_system",
        "export_inputs",
        "embed_items",
        "build_index",
        "publish_candidates",
        "publish_digests",
    ]
    metrics = json.loads(published(lake, "metrics.json"))
    system = metrics["system"]
    assert system["trained"] is False and system["training"] is None
    assert system["champion"]["system"]["two_tower_version"] == HOSTILE_VERSION
    assert system["served"] == {
        "source": "system champion",
        "label": "two-tower + ranker + diversified",
        "system": hostile,
        "choice": None,
    }
    assert metrics["headline"]["served_system"] == "two-tower + ranker + diversified"
    assert metrics["headline"]["system_promoted"] is None
    assert metrics["candidates"] == {"published": False}
    html = published(lake, "report.html").decode()
    assert "No training run on this date: the system in force stays." in html
    assert "&lt;b&gt;two-tower&lt;/b&gt;" in html
    assert "No candidates were published for this date" in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "odd $\\nope$ &lt;b&gt;" in html
    # quarantine and timings only
    assert html.count("data:image/png;base64,") == 2


def test_malformed_fact_names_the_file(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    fact = kept_fact()
    fact["selection"]["test"][ALS]["intervals"]["ndcg_at_10"]["low"] = "high"
    write_fact(lake, "train_system", fact)
    with pytest.raises(ReportInputError, match=r"facts/train_system\.json is malformed.*'high'"):
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
        "train_system",
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
    assert done.stdout.count("<img ") == 6
