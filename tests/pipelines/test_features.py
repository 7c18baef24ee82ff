"""The features step: quality gate, quarantine export, idempotent reruns, empty days."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.settings import Settings
from pipelines.core.sql_catalog import load_catalog
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.features import DataQualityError, build_features
from tests.fixtures import event, item, load, user

DS = dt.date(2026, 11, 20)


def _world(warehouse: DuckDBWarehouse, bad_events: int) -> None:
    load(warehouse, "raw_users", [user("u1", "2026-11-01 00:00")])
    load(warehouse, "raw_items", [item("p1", "2026-11-01 00:00"), item("p2", "2026-11-05 00:00")])
    good = [
        event(f"g{i}", "u1", "p1" if i % 2 else "p2", "impression", f"{DS} 0{i % 10}:00") for i in range(99)
    ]
    bad = [event(f"b{i}", "u1", "p404", "click", f"{DS} 10:00") for i in range(bad_events)]
    load(warehouse, "raw_events", good + bad)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[DuckDBWarehouse, Lake, Settings]:
    settings = Settings(data_dir=tmp_path)
    return DuckDBWarehouse(settings.duckdb_file), Lake(settings.lake_url), settings


def test_one_bad_row_in_a_hundred_passes_at_the_default_threshold(setup) -> None:
    warehouse, lake, settings = setup
    _world(warehouse, bad_events=1)  # 1 / 100 = 1.00%, not above 1%
    report = build_features(warehouse, lake, DS, settings)
    assert report.quality["raw_events"] == {"ok": 99, "unknown_item": 1}
    assert report.rows["stg_events"] == 99
    exported = pq.read_table(lake.path(lake.manifest_files(LakePaths.quarantine(DS))[0])).to_pylist()
    assert [(r["record_id"], r["reject_reason"]) for r in exported] == [("b0", "unknown_item")]


def test_above_the_threshold_fails_and_builds_nothing_downstream(setup) -> None:
    warehouse, lake, settings = setup
    _world(warehouse, bad_events=2)  # 2 / 101 = 1.98% > 1%
    with pytest.raises(DataQualityError, match=r"raw_events: 1\.98% bad \(unknown_item=2\)"):
        build_features(warehouse, lake, DS, settings)
    assert warehouse.count_rows("quarantine", DS) == 2
    assert not warehouse.table_exists("stg_events")
    assert lake.is_published(LakePaths.quarantine(DS))


def test_the_threshold_is_configurable(setup) -> None:
    warehouse, lake, settings = setup
    _world(warehouse, bad_events=2)
    lenient = settings.with_overrides({"quality": {"max_bad_fraction": 0.05}})
    assert build_features(warehouse, lake, DS, lenient).rows["stg_events"] == 99


def test_a_day_without_events_fails_clearly(setup) -> None:
    warehouse, lake, settings = setup
    _world(warehouse, bad_events=0)
    with pytest.raises(DataQualityError, match="no raw events arrived for ds=2026-11-21"):
        build_features(warehouse, lake, dt.date(2026, 11, 21), settings)


def test_a_quiet_day_of_a_history_build_is_built_from_the_days_before(setup) -> None:
    warehouse, lake, settings = setup
    _world(warehouse, bad_events=0)
    build_features(warehouse, lake, DS, settings)
    quiet = DS + dt.timedelta(days=1)
    report = build_features(warehouse, lake, quiet, settings, quiet_day=True)
    assert report.rows["stg_events"] == 0 and not report.quality.get("raw_events")
    # The user and both posts are there the day after, with the events of the day before in their windows.
    before = warehouse.query(f"select * from user_features where ds = '{DS}'").to_pylist()
    users = warehouse.query(f"select * from user_features where ds = '{quiet}'").to_pylist()
    assert [u["user_id"] for u in users] == ["u1"]
    assert users[0]["ctr_lookback"] == before[0]["ctr_lookback"] > 0
    items = warehouse.query(f"select item_id from item_features where ds = '{quiet}' order by 1")
    assert items.column(0).to_pylist() == ["p1", "p2"]


def test_rerun_leaves_identical_partitions(setup) -> None:
    warehouse, lake, settings = setup
    _world(warehouse, bad_events=1)
    build_features(warehouse, lake, DS, settings)

    def snapshot() -> dict[str, list[dict]]:
        return {
            m.name: sorted(warehouse.query(f"select * from {m.name} where ds = '{DS}'").to_pylist(), key=repr)
            for m in load_catalog().models
        }

    first = snapshot()
    build_features(warehouse, lake, DS, settings)
    assert snapshot() == first
    assert warehouse.partitions("stg_events") == [DS]
