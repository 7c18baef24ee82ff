"""Reliability cases 4-7 (issue 13, "Bad input"): one bad row never stops a night, implausible timestamps
are left out or quarantined, every import error names its file, and imports stream in bounded memory."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pyarrow as pa
import pytest

import pipelines.data.input_files as input_files
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.settings import QualityConfig, Settings
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.features import build_features
from pipelines.data.importer import import_files
from pipelines.data.input_files import InputFileError, iter_table_file
from pipelines.data.plausible import first_plausible_day
from pipelines.delivery.digests import renderer as renderer_module
from pipelines.delivery.digests.addresses import is_valid_email
from pipelines.delivery.digests.renderer import DigestRenderer
from tests.fixtures import event, item, load, user
from tests.pipelines.delivery.digests.digest_world import (
    CONFIG,
    DS,
    published_records,
    render_and_publish_digests,
    world,
)

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
EVENTS_HEADER = "event_id,user_id,item_id,event_type,event_ts,position\n"
ITEMS_CSV = (
    "item_id,title,summary,tags,source,author,post_type,content_type,language,url,created_at,deleted\n"
    "p1,Hello,Intro,python,blog,ann,article,text,en,https://x/p1,2026-11-19T00:00:00,false\n"
)
USERS_CSV = (
    "user_id,email,signup_ts,language,selected_tags,blocked_tags,blocked_sources,digest_opt_in,"
    "digest_frequency,digest_weekday,timezone\n"
    "u1,a@example.com,2026-11-01T00:00:00,en,python,,,true,weekly,3,UTC\n"
)


def _files(tmp_path: Path, events: str | bytes, items: str = ITEMS_CSV, users: str = USERS_CSV) -> list[Path]:
    paths = [tmp_path / "events.csv", tmp_path / "items.csv", tmp_path / "users.csv"]
    for path, content in zip(paths, (events, items, users), strict=True):
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return paths


# -- case 4 ---------------------------------------------------------------------------------------------
def test_case_04_an_email_ending_in_newline_skips_only_that_user(tmp_path: Path) -> None:
    assert not is_valid_email("u01@example.com\n")
    assert not is_valid_email("u01@example.com\r\nBcc: x@evil.example")
    assert not is_valid_email("u01@exa\x00mple.com")
    lake, users, items = world(tmp_path)
    emails = users.column("email").to_pylist()
    emails[users.column("user_id").to_pylist().index("u09")] = "u09@example.com\n"
    users = users.set_column(users.schema.get_field_index("email"), "email", pa.array(emails))
    report = render_and_publish_digests(lake, DS, users, items, CONFIG)
    assert [r["user_id"] for r in published_records(lake, DS)] == ["u01"]
    assert report.skipped["invalid_email"] == 2  # u03 ("not an address") and u09


def test_case_04_a_rendering_error_skips_that_user_names_it_and_the_night_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = DigestRenderer.message

    def breaks_for_u09(renderer, user_id, *args, **kwargs):
        if user_id == "u09":
            raise ValueError("a value no check foresaw")
        return real(renderer, user_id, *args, **kwargs)

    monkeypatch.setattr(DigestRenderer, "message", breaks_for_u09)
    lake, users, items = world(tmp_path)
    with caplog.at_level(logging.WARNING):
        report = render_and_publish_digests(lake, DS, users, items, CONFIG)
    assert report.skipped["render_error"] == 1 and report.messages_written == 1
    assert lake.read_manifest(LakePaths.digests(DS))["metadata"]["skipped"]["render_error"] == 1
    assert any("'u09'" in r.getMessage() and "render_error" in r.getMessage() for r in caplog.records)


def test_case_04_a_broken_template_still_fails_the_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jinja2

    names = ["digest.txt.j2", "digest.html.j2", "digest_post.txt.j2", "digest_post.html.j2"]
    names.append("digest_post_start.html.j2")
    broken = jinja2.Environment(loader=jinja2.DictLoader(dict.fromkeys(names, "{{ x")))
    monkeypatch.setattr(renderer_module, "digest_templates", lambda: broken)
    lake, users, items = world(tmp_path)
    with pytest.raises(jinja2.TemplateSyntaxError):
        render_and_publish_digests(lake, DS, users, items, CONFIG)


# -- case 5 ---------------------------------------------------------------------------------------------
def test_case_05_the_importer_leaves_out_epoch_zero_and_year_9999_rows(tmp_path: Path) -> None:
    events = EVENTS_HEADER + (
        "e1,u1,p1,click,2026-11-20T08:00:00Z,0\n"
        "e2,u1,p1,click,1970-01-01T00:00:00Z,0\n"
        "e3,u1,p1,click,9999-12-31T23:59:59Z,0\n"
        "e4,u1,p1,click,2026-11-21T08:00:00Z,0\n"
        "e5,u1,p1,click,2003-05-01T00:00:00Z,0\n"  # plausible alone, but 23 years before the rest
    )
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    report = import_files(warehouse, *_files(tmp_path, events), now=NOW)
    assert report.loaded["raw_events"] == 2
    assert report.rejected["raw_events"] == {"out_of_range": 3}
    assert warehouse.partitions("raw_events") == [dt.date(2026, 11, 20), dt.date(2026, 11, 21)]
    # The bounds are settings: a longer gap allowance keeps the 2003 row.
    wide = QualityConfig(max_gap_days=10_000)
    report = import_files(DuckDBWarehouse(tmp_path / "w2.duckdb"), *_files(tmp_path, events), wide, now=NOW)
    assert report.rejected["raw_events"] == {"out_of_range": 2}


def test_case_05_the_quality_gate_quarantines_out_of_range_rows(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    ds = dt.date(2026, 11, 20)
    load(warehouse, "raw_users", [user("u1", "2026-11-01 00:00", "2026-11-20")])
    load(
        warehouse,
        "raw_items",
        [item("p1", "2026-11-19 00:00", "2026-11-20"), item("p0", "1970-01-01 00:00", "2026-11-20")],
    )
    rows = [event(f"e{i}", "u1", "p1", "click", f"2026-11-20 0{i}:00") for i in range(1, 10)]
    rows.append({**event("e0", "u1", "p1", "click", "1970-01-01 00:00"), "ds": ds})  # arrived on ds
    load(warehouse, "raw_events", rows)
    settings = settings.model_copy(update={"quality": QualityConfig(max_bad_fraction=0.5)})
    report = build_features(warehouse, Lake(settings.lake_url), ds, settings)
    assert report.quality["raw_events"]["out_of_range"] == 1
    assert report.quality["raw_items"]["out_of_range"] == 1
    quarantined = warehouse.query("select record_id, reject_reason from quarantine order by record_id")
    assert quarantined.to_pylist() == [
        {"record_id": "e0", "reject_reason": "out_of_range"},
        {"record_id": "p0", "reject_reason": "out_of_range"},
    ]


def test_case_05_the_history_build_starts_at_the_first_plausible_day(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    days = ["1970-01-01", "2026-11-18", "2026-11-19", "2026-11-20"]
    load(
        warehouse,
        "raw_events",
        [event(f"e{i}", "u1", "p1", "click", f"{d} 08:00") for i, d in enumerate(days)],
    )
    assert first_plausible_day(warehouse, dt.date(2026, 11, 20), QualityConfig()) == dt.date(2026, 11, 18)
    # Reproducible: the reference is the end of the build, not the clock.
    assert first_plausible_day(warehouse, dt.date(2026, 11, 19), QualityConfig()) == dt.date(2026, 11, 18)


# -- case 6 ---------------------------------------------------------------------------------------------
BAD_FILES = {
    "not-utf8": (
        EVENTS_HEADER.encode()
        + b"e1,u1,p1,click,2026-11-20T08:00:00Z,0\ne2,u\xff1,p1,click,2026-11-20T08:00:00Z,0\n",
        r"events\.csv: column 'user_id' row 2: not UTF-8",
    ),
    "empty": (b"", r"events\.csv: the file is empty"),
    "header-only": (EVENTS_HEADER.encode(), r"events\.csv: no rows"),
    "short-line": (
        EVENTS_HEADER.encode() + b"e1,u1,p1,click\n",
        r"events\.csv: line 2 has 4 fields, expected 6",
    ),
    "bad-number": (
        EVENTS_HEADER.encode() + b"e1,u1,p1,click,2026-11-20T08:00:00Z,first\n",
        r"events\.csv: column 'position' row 1",
    ),
    "bad-timestamp": (
        EVENTS_HEADER.encode() + b"e1,u1,p1,click,2026-11-20T08:00:00Z,0\ne2,u1,p1,click,soon,0\n",
        r"events\.csv: column 'event_ts' row 2: 'soon' is not an ISO 8601 timestamp",
    ),
    "no-timestamp": (
        EVENTS_HEADER.encode() + b"e1,u1,p1,click,,0\n",
        r"events\.csv: column 'event_ts' row 1 is empty",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_case_06_every_import_error_names_the_file_and_where_known_the_row_and_column(
    tmp_path: Path, case: str
) -> None:
    content, message = BAD_FILES[case]
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    with pytest.raises(InputFileError, match=message):
        import_files(warehouse, *_files(tmp_path, content), now=NOW)
    assert not warehouse.table_exists("raw_items"), "nothing is loaded when a file fails"


def test_case_06_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    events, items, users = _files(tmp_path, EVENTS_HEADER + "e1,u1,p1,click,2026-11-20T08:00:00Z,0\n")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    with pytest.raises(InputFileError, match=r"nope\.csv: no such file"):
        import_files(warehouse, events, items, tmp_path / "nope.csv")
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputFileError, match=r"fake\.parquet: not a readable Parquet file"):
        import_files(warehouse, tmp_path / "fake.parquet", items, users)


def test_case_06_a_header_only_file_loads_when_an_empty_table_is_allowed(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    report = import_files(warehouse, *_files(tmp_path, EVENTS_HEADER), now=NOW, allow_empty=True)
    assert report.loaded == {"raw_events": 0, "raw_items": 1, "raw_users": 1}


# -- case 7 ---------------------------------------------------------------------------------------------
def test_case_07_imports_stream_in_bounded_batches_and_load_one_day_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(input_files, "CSV_BLOCK_BYTES", 64 << 10)
    rows = 200_000  # about 11 MB of CSV over 4 days, shuffled so every batch holds several days
    lines = [
        f"e{i},u{i % 97},p1,click,2026-11-{17 + (i * 7919) % 4}T{(i // 10_000) % 24:02d}:00:00Z,{i % 30}\n"
        for i in range(rows)
    ]
    events = tmp_path / "events.csv"
    events.write_text(EVENTS_HEADER + "".join(lines))
    # Arrow's allocation count is per process: what earlier tests of this worker still hold is not ours.
    held_before = pa.total_allocated_bytes()
    peak = 0
    batches = 0
    for _, batch in iter_table_file(events, "raw_events"):
        batches += 1
        peak = max(peak, pa.total_allocated_bytes() - held_before)
        assert batch.num_rows < 5_000
    assert batches > 40
    assert peak < events.stat().st_size / 2, f"{peak:,} bytes held while reading {events.stat().st_size:,}"

    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    loads = []
    real = warehouse.load_raw

    def load_raw(table: str, part: pa.Table, ds: dt.date) -> int:
        loads.append((table, ds, part.num_rows))
        return real(table, part, ds)

    monkeypatch.setattr(warehouse, "load_raw", load_raw)
    (tmp_path / "catalog").mkdir()
    _, items, users = _files(tmp_path / "catalog", "")
    report = import_files(warehouse, events, items, users, now=NOW, scratch_dir=tmp_path)
    assert report.loaded["raw_events"] == rows
    event_loads = [(ds, n) for table, ds, n in loads if table == "raw_events"]
    assert [ds.day for ds, _ in event_loads] == [17, 18, 19, 20]  # one load per day, each day once
    assert sum(n for _, n in event_loads) == rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("nightfeed-import-")], "scratch left"
