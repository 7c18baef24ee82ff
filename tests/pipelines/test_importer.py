"""Importing users' own files and MovieLens files into the raw tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.importer import import_files
from pipelines.data.input_files import InputFileError, read_table_file

EVENTS_CSV = """event_id,user_id,item_id,event_type,event_ts,position
e1,u1,p1,impression,2026-11-20T08:00:00,0
e2,u1,p1,click,2026-11-20T08:01:00+00:00,0
e3,u1,p1,upvote,2026-11-21T09:00:00,
"""
ITEMS_CSV = """item_id,title,summary,tags,source,author,post_type,content_type,language,url,created_at,deleted
p1,"Hello, world",Intro,python|django,blog,ann,article,text,en,https://x/p1,2026-11-19T00:00:00,false
"""
USERS_CSV = (
    "user_id,email,signup_ts,language,selected_tags,blocked_tags,blocked_sources,"
    "digest_opt_in,digest_frequency,digest_weekday,timezone\n"
    """u1,a@example.com,2026-11-01T00:00:00,en,python,,,true,weekly,3,Europe/Berlin
"""
)


def _write(tmp_path: Path) -> tuple[Path, Path, Path]:
    paths = tmp_path / "events.csv", tmp_path / "items.csv", tmp_path / "users.csv"
    for path, text in zip(paths, (EVENTS_CSV, ITEMS_CSV, USERS_CSV), strict=True):
        path.write_text(text)
    return paths


def test_csv_files_load_into_daily_partitions(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    report = import_files(warehouse, *_write(tmp_path))
    assert report.loaded == {"raw_events": 3, "raw_items": 1, "raw_users": 1}
    assert warehouse.partitions("raw_events") == [dt.date(2026, 11, 20), dt.date(2026, 11, 21)]
    item = warehouse.query("select tags, title from raw_items").to_pylist()[0]
    assert item == {"tags": ["python", "django"], "title": "Hello, world"}
    user = warehouse.query("select digest_opt_in, blocked_tags from raw_users").to_pylist()[0]
    assert user["digest_opt_in"] is True


def test_a_bad_value_names_file_column_and_row(tmp_path: Path) -> None:
    events, _, _ = _write(tmp_path)
    events.write_text(EVENTS_CSV.replace("2026-11-21T09:00:00", "yesterday"))
    with pytest.raises(InputFileError, match=r"events.csv: column 'event_ts' row 3"):
        read_table_file(events, "raw_events")


def test_missing_columns_are_named(tmp_path: Path) -> None:
    events, _, _ = _write(tmp_path)
    events.write_text(EVENTS_CSV.replace(",position", ",pos"))
    with pytest.raises(InputFileError, match=r"missing \['position'\], unexpected \['pos'\]"):
        read_table_file(events, "raw_events")
