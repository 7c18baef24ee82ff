"""Seen means ever seen: a post a user rated 400 days ago never comes back in their list, through the real
import, feature, and nightly path; a configured horizon lets it back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.core import jobs
from pipelines.core.context import settings_with
from pipelines.core.lake import Lake
from pipelines.core.paths import SYSTEM
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.movielens import import_movielens
from pipelines.jobs import run
from pipelines.serving.shards import read_candidates
from pipelines.serving.system import ServedSystem
from pipelines.training import registry

DS = dt.date(2026, 11, 22)
OLD = DS - dt.timedelta(days=400)


def _ts(day: dt.date, hour: int = 12) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC).timestamp())


def _ratings(folder: Path) -> None:
    """Movie 1 is the most rated of all; user 1 rated it (and movie 2) 400 days ago, user 99 never."""
    rows = [(1, 1, 5.0, _ts(OLD)), (1, 2, 4.0, _ts(OLD, 13)), (1, 5, 3.0, _ts(DS))]
    rows += [(u, 1, 4.0, _ts(DS - dt.timedelta(days=u % 3))) for u in range(2, 32)]
    rows += [(u, 3, 3.0, _ts(DS - dt.timedelta(days=1))) for u in range(2, 12)]
    rows += [(u, 4, 3.0, _ts(DS - dt.timedelta(days=1))) for u in range(2, 6)]
    rows += [(99, 6, 4.0, _ts(DS))]
    # Some activity every 100 days between: a log, not two islands (the importer drops an island).
    rows += [(40 + d, 6, 3.0, _ts(DS - dt.timedelta(days=d))) for d in (100, 200, 300)]
    folder.mkdir()
    lines = ["userId,movieId,rating,timestamp", *(f"{u},{m},{r},{t}" for u, m, r, t in rows)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = [f"{m},Movie {m} (1999),Drama|Comedy" for m in range(1, 7)]
    (folder / "movies.csv").write_text("\n".join(["movieId,title,genres", *movies]) + "\n")


def _lists(horizon: str | None) -> dict[str, list[str]]:
    if horizon is not None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NIGHTFEED_CANDIDATES__SEEN_HORIZON_DAYS", horizon)
            return _lists(None)
    for job in (jobs.EXPORT_INPUTS, jobs.EMBED_ITEMS, jobs.BUILD_INDEX):
        run(job, DS)
    plan = run(jobs.PLAN_SHARDS, DS)
    results = [run(jobs.CANDIDATES_FOR_SHARD, DS, **p) for p in plan]
    run(jobs.PUBLISH_CANDIDATES, DS, staging=plan[0]["staging"], shard_results=results)
    table = read_candidates(Lake(settings_with(None).lake_url), DS)
    table = table.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    lists: dict[str, list[str]] = {}
    for user, item in zip(
        table.column("user_id").to_pylist(), table.column("item_id").to_pylist(), strict=True
    ):
        lists.setdefault(user, []).append(item)
    return lists


def test_a_post_seen_400_days_ago_never_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NIGHTFEED_CANDIDATES__NUM_SHARDS", "1")
    _ratings(tmp_path / "ml")
    settings = settings_with(None)
    with DuckDBWarehouse(settings.duckdb_file) as warehouse:
        import_movielens(warehouse, tmp_path / "ml")
        days = warehouse.partitions("raw_events")
    assert days[0] == OLD
    for day in days:  # the days with ratings; the gap of 400 days in between has none
        run(jobs.BUILD_FEATURES, day)
    # Recent popularity over all history serves every user movie 1 first, unless they saw it.
    system = ServedSystem("most_popular", None, diversify=False, popularity_window_days=None)
    lake = Lake(settings.lake_url)
    version = registry.new_version(DS, system.to_json())
    registry.promote(lake, SYSTEM, {"version": version, "system": system.to_json()}, expected_champion=None)

    lists = _lists(None)
    user, other = "ml-u1", "ml-u99"
    assert lists[other][0] == "ml-i1", "the most popular post leads a list that may hold it"
    assert user in lists and not {"ml-i1", "ml-i2", "ml-i5"} & set(lists[user])
    # With a 30-day horizon the posts rated 400 days ago are allowed again (and movie 1 leads).
    again = _lists("30")
    assert again[user][0] == "ml-i1" and "ml-i2" in again[user] and "ml-i5" not in again[user]
