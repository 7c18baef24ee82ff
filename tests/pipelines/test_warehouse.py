"""The DuckDB warehouse: partition replacement and raw-table loading rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES, RAW_EVENTS
from pipelines.core.warehouse import DuckDBWarehouse
from tests.fixtures import candidate_rows, day, event, publish_shards, raw

DS1, DS2 = dt.date(2026, 11, 21), dt.date(2026, 11, 22)


def test_load_raw_replaces_only_its_partition(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    day1 = raw("raw_events", [event("e1", "u", "p", "click", "2026-11-01 10:00")])
    day2 = raw("raw_events", [event(f"e{i}", "u", "p", "click", "2026-11-02 10:00") for i in range(2, 5)])
    warehouse.load_raw("raw_events", day1, dt.date(2026, 11, 1))
    warehouse.load_raw("raw_events", day2, dt.date(2026, 11, 2))
    warehouse.load_raw("raw_events", day2, dt.date(2026, 11, 2))  # a rerun
    assert warehouse.count_rows("raw_events", dt.date(2026, 11, 1)) == 1
    assert warehouse.count_rows("raw_events", dt.date(2026, 11, 2)) == 3
    assert warehouse.partitions("raw_events") == [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]


def test_load_raw_rejects_rows_of_another_day(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rows = raw("raw_events", [event("e1", "u", "p", "click", "2026-11-01 10:00")])
    with pytest.raises(
        ValueError, match=r"rows for ds=2026-11-02 carry other ds values \[datetime.date\(2026, 11, 1\)\]"
    ):
        warehouse.load_raw("raw_events", rows, dt.date(2026, 11, 2))


def test_load_raw_rejects_wrong_columns(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rows = pa.table({"event_id": ["e1"], "ds": [dt.date(2026, 11, 1)]})
    with pytest.raises(ValueError, match=r"raw_events: columns \['event_id', 'ds'\] do not match"):
        warehouse.load_raw("raw_events", rows, dt.date(2026, 11, 1))
    with pytest.raises(ValueError, match="unknown raw table 'events'"):
        warehouse.load_raw("events", RAW_EVENTS.empty_table(), dt.date(2026, 11, 1))


def test_a_failed_replace_rolls_back(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rows = raw("raw_events", [event("e1", "u", "p", "click", "2026-11-01 10:00")])
    warehouse.load_raw("raw_events", rows, dt.date(2026, 11, 1))
    # The delete succeeds, then the insert fails: the transaction must put the deleted row back.
    with pytest.raises(Exception, match="has 7 columns but 2 values"):
        warehouse._replace("raw_events", "select 'x' as event_id, 'not a date' as ds", dt.date(2026, 11, 1))
    assert warehouse.count_rows("raw_events", dt.date(2026, 11, 1)) == 1


def test_a_second_process_waits_for_the_writer_lock(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "w.duckdb"
    # The holder says when it holds the file, so a slow start on a loaded machine cannot reverse the roles.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); "
            "time.sleep(2)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    warehouse = DuckDBWarehouse(path, lock_timeout_s=30)
    waited = time.monotonic() - started
    holder.wait()
    assert warehouse.table_exists("raw_events") is False
    assert waited > 0.3, "the second writer should have waited for the first to release the file"


def test_published_files_load_into_a_ds_partition_that_a_rerun_replaces(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    first = [
        candidate_rows([("u1", 1, "p1", 0.9), ("u1", 2, "p2", 0.5)]),
        candidate_rows([("u2", 1, "p3", 0.7)]),
    ]
    publish_shards(lake, LakePaths.candidates(DS1), first)
    publish_shards(lake, LakePaths.candidates(DS2), [candidate_rows([("u9", 1, "p9", 0.1)])])

    assert warehouse.load_published("candidates", lake, LakePaths.candidates(DS1), DS1, CANDIDATES) == 3
    assert warehouse.load_published("candidates", lake, LakePaths.candidates(DS2), DS2, CANDIDATES) == 1
    loaded = warehouse.query("select * from `candidates` where ds = date '2026-11-21' order by user_id, rank")
    expected = pa.concat_tables(first).append_column("ds", pa.array([day(DS1)] * 3))
    assert loaded.to_pylist() == expected.to_pylist()

    publish_shards(lake, LakePaths.candidates(DS1), [candidate_rows([("u3", 1, "p1", 0.8)])])
    assert warehouse.load_published("candidates", lake, LakePaths.candidates(DS1), DS1, CANDIDATES) == 1
    assert warehouse.partitions("candidates") == [DS1, DS2]
    assert warehouse.count_rows("candidates") == 2


def test_a_load_with_a_malformed_file_names_it_and_keeps_the_old_partition(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    dataset = LakePaths.candidates(DS1)
    publish_shards(lake, dataset, [candidate_rows([("u1", 1, "p1", 0.9)])])
    warehouse.load_published("candidates", lake, dataset, DS1, CANDIDATES)
    renamed = candidate_rows([("u2", 1, "p2", 0.4)]).rename_columns([*CANDIDATES.names[:-1], "why"])
    publish_shards(lake, dataset, [candidate_rows([("u3", 1, "p3", 0.3)]), renamed])

    with pytest.raises(ValueError, match=r"shard=001\.parquet: columns .*'why'"):
        warehouse.load_published("candidates", lake, dataset, DS1, CANDIDATES)

    assert warehouse.query("select user_id from `candidates`").column("user_id").to_pylist() == ["u1"]
    with pytest.raises(ManifestError):
        warehouse.load_published("candidates", lake, LakePaths.candidates(DS2), DS2, CANDIDATES)


def test_rows_loaded_on_one_connection_stay_visible_to_its_later_queries(tmp_path: Path) -> None:
    # DuckDB 2.0 hid the rows of a second load of more than one row group (122,880 rows) from every scan on
    # the same connection when the table was created earlier on it inside a transaction.
    rng = np.random.default_rng(3)
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    n = 123_000
    for k, ds in enumerate((DS1, DS2)):
        at = dt.datetime.combine(ds, dt.time(8), tzinfo=dt.UTC)
        rows = pa.table(
            {
                "event_id": [f"e{k}-{i}" for i in range(n)],
                "user_id": [f"u{u}" for u in rng.integers(0, 100_000, n)],
                "item_id": [f"p{p}" for p in rng.integers(0, 20_000, n)],
                "event_type": ["click"] * n,
                "event_ts": [at] * n,
                "position": rng.integers(0, 30, n),
                "ds": [ds] * n,
            },
            schema=RAW_EVENTS,
        )
        assert warehouse.load_raw("raw_events", rows, ds) == n
    assert warehouse.partitions("raw_events") == [DS1, DS2]
