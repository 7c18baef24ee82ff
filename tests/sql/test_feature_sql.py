"""Every SQL file parses as BigQuery and runs on DuckDB; the feature models give hand-checked rows.

The fixture world (two users, five posts, two days) is small enough to compute every expected value by
hand; the arithmetic is in the comments next to the assertions.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
import sqlglot

from pipelines.core.lake import Lake
from pipelines.core.settings import Settings
from pipelines.core.sql_catalog import SQL_DIR, load_catalog
from pipelines.core.sql_params import sql_params
from pipelines.core.warehouse import DuckDBWarehouse, SqlError
from pipelines.data.features import build_features
from tests.fixtures import day, event, item, load, user

DAY1, DAY2 = dt.date(2026, 11, 19), dt.date(2026, 11, 20)

SQL_FILES = sorted(p for p in SQL_DIR.rglob("*.sql") if "_macros" not in p.parts)


def _params(settings: Settings) -> dict[str, int]:
    return {
        **sql_params(settings),
        "train_days": 14,
        "eval_days": 3,
        "max_item_age_days": 30,
        "window_days": 1,
    }


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: str(p.relative_to(SQL_DIR)))
def test_sql_file_parses_as_bigquery_and_transpiles(tmp_path: Path, path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    rendered = warehouse.render(path.relative_to(SQL_DIR), DAY2, **_params(Settings(data_dir=tmp_path)))
    statements = sqlglot.parse(rendered, read="bigquery")
    assert len([s for s in statements if s is not None]) == 1, "one statement per file"
    assert "{{" not in rendered and "{%" not in rendered
    assert warehouse.compile(rendered).lower().lstrip().startswith(("with", "select", "/*"))


def test_render_names_the_file_on_an_undefined_parameter(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    with pytest.raises(SqlError, match=r"sql/models/features/user_features.sql: .*lookback_days"):
        warehouse.render("models/features/user_features.sql", DAY2)


def test_render_rejects_unsafe_parameter_values(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    with pytest.raises(SqlError, match=r"sql/queries/serving/interactions.sql: .*unsafe value"):
        warehouse.render("queries/serving/interactions.sql", DAY2, history_days="1; drop table raw_events")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> DuckDBWarehouse:
    """The fixture world, with features built for both days (quality threshold lifted)."""
    root = tmp_path_factory.mktemp("feature_sql")
    settings = Settings(data_dir=root).with_overrides({"quality": {"max_bad_fraction": 1.0}})
    warehouse = DuckDBWarehouse(settings.duckdb_file)
    load(
        warehouse,
        "raw_users",
        [
            user("u1", "2026-11-01 00:00", selected_tags=["python"]),
            user("u2", "2026-11-01 12:00", language="de", blocked_tags=["rust"]),
        ],
    )
    load(
        warehouse,
        "raw_items",
        [
            item("p1", "2026-11-01 00:00", tags=["python", "django"]),
            item("p2", "2026-11-02 00:00", tags=["rust"]),
            item("p3", "2026-11-10 00:00", tags=["python"]),
            item("p4", "2026-11-20 06:00", tags=["go"]),
            # p2 is deleted on day 2: a new version of the row arrives.
            item("p2", "2026-11-02 00:00", arrived=DAY2, tags=["rust"], deleted=True),
            # malformed: a language code must have two letters.
            item("p5", "2026-11-20 07:00", language="english"),
        ],
    )
    load(
        warehouse,
        "raw_events",
        [
            event("e1", "u1", "p1", "impression", "2026-11-19 09:00"),
            event("e2", "u1", "p1", "click", "2026-11-19 09:01"),
            event("e3", "u1", "p2", "impression", "2026-11-19 10:00"),
            event("e4", "u2", "p2", "impression", "2026-11-19 11:00"),
            event("e5", "u1", "p3", "impression", "2026-11-20 08:00"),
            event("e6", "u1", "p3", "click", "2026-11-20 08:01"),
            event("e6", "u1", "p3", "click", "2026-11-20 08:01"),  # delivered twice
            event("e7", "u1", "p3", "upvote", "2026-11-20 08:02"),
            event("e8", "u1", "p4", "click", "2026-11-20 12:00"),
            event("e9", "u1", "p1", "click", "2026-11-20 13:00"),
            event("e10", None, "p1", "click", "2026-11-20 14:00"),
            event("e11", "u1", "p999", "click", "2026-11-20 15:00"),
            event("e12", "u1", "p1", "click", "2026-11-22 00:00", ds=day(DAY2)),  # from the future
            event("e13", "u1", "p1", "clik", "2026-11-20 16:00"),
        ],
    )
    lake = Lake(settings.lake_url)
    for ds in (DAY1, DAY2):
        build_features(warehouse, lake, ds, settings)
    return warehouse


def _rows(warehouse: DuckDBWarehouse, sql: str) -> list[dict]:
    return warehouse.query(sql).to_pylist()


def test_quarantine_has_each_bad_row_with_its_reason(built: DuckDBWarehouse) -> None:
    rows = _rows(built, f"select source_table, record_id, reject_reason from quarantine where ds = '{DAY2}'")
    got = sorted((r["source_table"], r["record_id"], r["reject_reason"]) for r in rows)
    assert got == [
        ("raw_events", "e10", "null_key"),
        ("raw_events", "e11", "unknown_item"),
        ("raw_events", "e12", "future_timestamp"),
        ("raw_events", "e13", "malformed_value"),
        ("raw_events", "e6", "duplicate"),
        ("raw_items", "p5", "malformed_value"),
    ]


def test_staged_events_are_the_usable_ones_once(built: DuckDBWarehouse) -> None:
    rows = _rows(built, f"select event_id from stg_events where ds = '{DAY2}' order by event_id")
    assert [r["event_id"] for r in rows] == ["e5", "e6", "e7", "e8", "e9"]


def test_catalog_keeps_the_latest_version_as_of_each_day(built: DuckDBWarehouse) -> None:
    def p2_deleted(ds: str) -> bool:
        return _rows(built, f"select deleted from stg_items where ds = '{ds}' and item_id = 'p2'")[0][
            "deleted"
        ]

    assert p2_deleted(DAY1) is False
    assert p2_deleted(DAY2) is True
    ids = _rows(built, f"select item_id from stg_items where ds = '{DAY2}' order by item_id")
    assert [r["item_id"] for r in ids] == ["p1", "p2", "p3", "p4"]  # p5 is quarantined


def test_user_features_at_end_of_day(built: DuckDBWarehouse) -> None:
    u1 = _rows(built, f"select * from user_features where ds = '{DAY2}' and user_id = 'u1'")[0]
    # Last engagement per post: p1 13:00 (e9), p4 12:00 (e8), p3 08:02 (e7) -> most recent first.
    assert u1["history"] == ["p1", "p4", "p3"]
    # Engagements e2, e6, e7, e8, e9 = 5; clicks e2, e6, e8, e9 = 4; impressions e1, e3, e5 = 3.
    assert u1["activity_lookback"] == 5
    assert u1["ctr_lookback"] == pytest.approx((4 + 1) / (3 + 10))
    # Engaged posts' tags: p1 python+django, p4 go, p3 python -> python 2/4, django 1/4, go 1/4.
    assert u1["affinity_tags"] == ["python", "django", "go"]
    assert u1["affinity_weights"] == pytest.approx([0.5, 0.25, 0.25])
    # Signed up 2026-11-01 00:00, end of ds is 2026-11-21 00:00 -> 20 days.
    assert u1["account_age_days"] == pytest.approx(20.0)
    u2 = _rows(built, f"select * from user_features where ds = '{DAY2}' and user_id = 'u2'")[0]
    assert u2["history"] == [] and u2["activity_lookback"] == 0
    assert u2["ctr_lookback"] == pytest.approx((0 + 1) / (1 + 10))  # one impression (e4), no click


def test_user_features_of_a_day_see_nothing_of_later_days(built: DuckDBWarehouse) -> None:
    u1 = _rows(
        built, f"select history, activity_lookback from user_features where ds = '{DAY1}' and user_id = 'u1'"
    )
    assert u1 == [{"history": ["p1"], "activity_lookback": 1}]


def test_item_features(built: DuckDBWarehouse) -> None:
    p1 = _rows(built, f"select * from item_features where ds = '{DAY2}' and item_id = 'p1'")[0]
    # p1: one impression (e1), two clicks (e2, e9) in the last 7 days -> (2 + 1) / (1 + 20).
    assert p1["impressions_short"] == 1
    assert p1["ctr_short"] == pytest.approx(3 / 21)
    assert p1["engagements_short"] == 2
    p3 = _rows(built, f"select item_age_days from item_features where ds = '{DAY2}' and item_id = 'p3'")[0]
    assert p3["item_age_days"] == pytest.approx(11.0)  # created 11-10 00:00, end of ds 11-21 00:00


def test_retrieval_examples_are_point_in_time(built: DuckDBWarehouse) -> None:
    rows = _rows(
        built,
        f"select item_id, history, activity_lookback, item_age_days from retrieval_examples "
        f"where ds = '{DAY2}' order by event_ts",
    )
    # p3 first engaged 08:01: only p1 (clicked the day before) is earlier; p4 (12:00) must not leak in.
    # p4 first engaged 12:00: p3 (last 08:02) and p1 (19th 09:01) are earlier; p1's 13:00 click is later.
    # p1 is not a positive on day 2: its first engagement was on day 1.
    assert [(r["item_id"], r["history"], r["activity_lookback"]) for r in rows] == [
        ("p3", ["p1"], 1),
        ("p4", ["p3", "p1"], 3),
    ]
    assert rows[1]["item_age_days"] == pytest.approx(6 / 24)  # p4 created 06:00, engaged 12:00
    day1 = _rows(built, f"select item_id, history from retrieval_examples where ds = '{DAY1}'")
    assert day1 == [{"item_id": "p1", "history": []}]


def test_ranking_examples_label_and_features_of_the_day_before(built: DuckDBWarehouse) -> None:
    rows = _rows(built, f"select * from ranking_examples where ds = '{DAY2}'")
    assert len(rows) == 1  # the only impression of day 2 is u1 seeing p3
    row = rows[0]
    assert (row["user_id"], row["item_id"], row["label"]) == ("u1", "p3", 2)  # click 1, upvote 2 -> 2
    # User features of day 1: one engagement (e2), history [p1]; p3 had no impressions before day 2.
    assert row["activity_lookback"] == 1 and row["history"] == ["p1"]
    assert row["impressions_short"] == 0
    assert row["item_age_days"] == pytest.approx(10 + 8 / 24)  # created 11-10 00:00, shown 11-20 08:00


def test_counts_come_back_as_int64_like_bigquery(built: DuckDBWarehouse) -> None:
    rows = built.run_query("training/ranking_dataset", DAY2, train_days=1, eval_days=1)
    for column in ("label", "impressions_short", "engagements_short", "activity_lookback", "position"):
        assert rows.schema.field(column).type == "int64", column


def test_temporal_split(built: DuckDBWarehouse) -> None:
    rows = built.run_query("training/retrieval_dataset", DAY2, train_days=1, eval_days=1).to_pylist()
    split = sorted((r["item_id"], r["split"]) for r in rows)
    assert split == [("p1", "train"), ("p3", "eval"), ("p4", "eval")]


def test_serving_items_exclude_deleted_and_old(built: DuckDBWarehouse) -> None:
    rows = built.run_query("serving/items", DAY2, max_item_age_days=15).to_pylist()
    # p1 (19 days old) is too old, p2 is deleted, p5 was quarantined.
    assert sorted(r["item_id"] for r in rows) == ["p3", "p4"]
    assert all(not math.isnan(r["ctr_short"]) for r in rows)


def test_every_model_and_query_has_the_columns_its_contract_declares(built: DuckDBWarehouse) -> None:
    catalog = load_catalog()
    for model in catalog.models:
        table = built.query(f"select * from {built.table_ref(model.name)} limit 0")
        assert table.schema.equals(model.arrow_schema()), (model.name, table.schema, model.arrow_schema())
    for name, query in catalog.queries.items():
        table = built.run_query(name, DAY2, **_params(Settings()))
        assert table.schema.equals(query.arrow_schema()), (name, table.schema, query.arrow_schema())
