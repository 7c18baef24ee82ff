"""Issue 13's related cases that already passed when it was filed, kept passing here: hostile post text and
links stay inert in digests, a refused file loads nothing, a day with too many bad rows stops before
anything is built from it, a bad run date is refused where it enters."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.core.lake import Lake
from pipelines.core.run_date import BadRunDate, parse_run_date
from pipelines.core.settings import Settings
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.features import DataQualityError, build_features
from pipelines.data.importer import import_files
from pipelines.data.input_files import InputFileError
from pipelines.delivery.digests.renderer import DigestRenderer
from pipelines.delivery.digests.schedule import SendSlot
from tests.fixtures import event, item, load, user
from tests.pipelines.delivery.digests.digest_world import CONFIG, DS, UTC, parse
from tests.pipelines.delivery.digests.digest_world import item as digest_row

SLOT = SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 7, tzinfo=UTC))


def test_passing_hostile_post_text_and_links_stay_inert_in_a_digest() -> None:
    hostile = digest_row(
        "i01", title="<script>alert(1)</script>\r\nBcc: victim@example.com", url="javascript:alert(1)"
    )
    message = DigestRenderer(DS, CONFIG).message("u01", "u01@example.com", "daily", SLOT, [hostile])
    msg = parse(message.raw)
    assert msg["Bcc"] is None
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "javascript:" not in html
    assert "https://nightfeed.example/items/i01?" in html


def test_passing_a_file_with_missing_columns_is_refused_before_anything_loads(tmp_path: Path) -> None:
    events, items, users = (tmp_path / name for name in ("events.csv", "items.csv", "users.csv"))
    events.write_text("event_id,user_id,item_id,event_type,event_ts\ne1,u1,p1,click,2026-11-20T08:00:00Z\n")
    items.write_text("item_id\np1\n")
    users.write_text("user_id\nu1\n")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    with pytest.raises(
        InputFileError, match=r"events\.csv: columns do not match raw_events: missing \['position'\]"
    ):
        import_files(warehouse, events, items, users)
    assert not warehouse.table_exists("raw_events")


def test_passing_a_day_with_too_many_bad_rows_stops_before_staging(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    load(warehouse, "raw_users", [user("u1", "2026-11-01 00:00", "2026-11-20")])
    load(warehouse, "raw_items", [item("p1", "2026-11-19 00:00", "2026-11-20")])
    load(warehouse, "raw_events", [event("e1", "u1", "p1", "click", "2026-11-20 08:00"),
                                   event("e2", "u1", "p404", "click", "2026-11-20 09:00")])  # fmt: skip
    with pytest.raises(DataQualityError, match="unknown_item=1"):
        build_features(warehouse, Lake(settings.lake_url), dt.date(2026, 11, 20), settings)
    assert not warehouse.table_exists("stg_events")


@pytest.mark.parametrize("value", ["2026-02-30", "9999-99-99", "20261120", "2026-11-20T00:00"])
def test_passing_a_bad_run_date_is_refused_where_it_enters(value: str) -> None:
    with pytest.raises(BadRunDate):
        parse_run_date(value)
