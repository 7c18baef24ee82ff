"""The DuckDB warehouse: partition replacement and raw-table loading rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.schema import RAW_EVENTS
from pipelines.warehouse import DuckDBWarehouse
from tests.fixtures import event, raw


def test_load_raw_replaces_only_its_partition(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    day1 = raw("raw_events", [event("e1", "u", "p", "click", "2026-11-01 10:00")])
    day2 = raw("raw_events", [event(f"e{i}", "u", "p", "click", "2026-11-02 10:00") for i in range(2, 5)])
    warehouse.load_raw("raw_events", day1, "2026-11-01")
    warehouse.load_raw("raw_events", day2, "2026-11-02")
    warehouse.load_raw("raw_events", day2, "2026-11-02")  # a rerun
    assert warehouse.count_rows("raw_events", "2026-11-01") == 1
    assert warehouse.count_rows("raw_events", "2026-11-02") == 3
    assert warehouse.partitions("raw_events") == ["2026-11-01", "2026-11-02"]


def test_load_raw_rejects_rows_of_another_day(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rows = raw("raw_events", [event("e1", "u", "p", "click", "2026-11-01 10:00")])
    with pytest.raises(
        ValueError, match=r"rows for ds=2026-11-02 carry other ds values \[datetime.date\(2026, 11, 1\)\]"
    ):
        warehouse.load_raw("raw_events", rows, "2026-11-02")


def test_load_raw_rejects_wrong_columns(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rows = pa.table({"event_id": ["e1"], "ds": [dt.date(2026, 11, 1)]})
    with pytest.raises(ValueError, match=r"raw_events: columns \['event_id', 'ds'\] do not match"):
        warehouse.load_raw("raw_events", rows, "2026-11-01")
    with pytest.raises(ValueError, match="unknown raw table 'events'"):
        warehouse.load_raw("events", RAW_EVENTS.empty_table(), "2026-11-01")


def test_a_failed_replace_rolls_back(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rows = raw("raw_events", [event("e1", "u", "p", "click", "2026-11-01 10:00")])
    warehouse.load_raw("raw_events", rows, "2026-11-01")
    # The delete succeeds, then the insert fails: the transaction must put the deleted row back.
    with pytest.raises(Exception, match="has 7 columns but 2 values"):
        warehouse._replace("raw_events", "select 'x' as event_id, 'not a date' as ds", "2026-11-01")
    assert warehouse.count_rows("raw_events", "2026-11-01") == 1


def test_a_second_process_waits_for_the_writer_lock(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); time.sleep(2)"]
    )
    time.sleep(0.8)
    started = time.monotonic()
    warehouse = DuckDBWarehouse(path, lock_timeout_s=30)
    waited = time.monotonic() - started
    holder.wait()
    assert warehouse.table_exists("raw_events") is False
    assert waited > 0.3, "the second writer should have waited for the first to release the file"
