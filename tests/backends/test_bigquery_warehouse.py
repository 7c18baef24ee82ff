"""``BigQueryWarehouse`` against bqemulator, through the real google-cloud-bigquery client.

The emulator runs DuckDB underneath, so these tests prove the client path (load jobs, multi-statement
scripts with a transaction, partitioned DDL, quoting of a dashed project id), not BigQuery's own SQL
engine. Every table lives in a fresh dataset of project ``nightfeed-test``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2
import pyarrow as pa
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES, RAW_EVENTS, RAW_ITEMS, RAW_USERS
from pipelines.core.sql_catalog import SqlFile, load_catalog
from pipelines.core.warehouse import BigQueryWarehouse, DuckDBWarehouse, SqlError, bigquery_schema
from pipelines.core.warehouse import base as warehouse_module
from tests.fixtures import candidate_rows, publish_shards

pytestmark = pytest.mark.emulator

DS1, DS2 = dt.date(2026, 11, 21), dt.date(2026, 11, 22)


def _ts(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _events(day: dt.date, rows: list[tuple[str, str, str, str, int | None]]) -> pa.Table:
    """Events of ``day``: (event_id, user_id, item_id, event_type, position), one per hour from 08:00."""
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "event_type": [r[3] for r in rows],
            "event_ts": [_ts(day, 8 + i) for i in range(len(rows))],
            "position": [r[4] for r in rows],
            "ds": [day] * len(rows),
        },
        schema=RAW_EVENTS,
    )


def _items(day: dt.date, ids: list[str], tags: list[list[str] | None]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "item_id": ids,
            "title": [f"Post {i}" for i in ids],
            "summary": [None] + [f"About {i}" for i in ids[1:]],
            "tags": tags,
            "source": ["hn"] * n,
            "author": ["ada"] * n,
            "post_type": ["article"] * n,
            "content_type": ["text"] * n,
            "language": ["en"] * n,
            "url": [f"https://example.org/{i}" for i in ids],
            "created_at": [_ts(day, 1)] * n,
            "deleted": [False] * (n - 1) + [None],
            "ds": [day] * n,
        },
        schema=RAW_ITEMS,
    )


def _users(day: dt.date, ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "user_id": ids,
            "email": [f"{u}@example.org" for u in ids],
            "signup_ts": [_ts(day, 0)] * n,
            "language": ["en"] * n,
            "selected_tags": [["python", "rust"]] + [[]] * (n - 1),
            "blocked_tags": [[]] * n,
            "blocked_sources": [["spam.example"]] + [None] * (n - 1),
            "digest_opt_in": [True] * n,
            "digest_frequency": ["daily"] * n,
            "digest_weekday": [None] + [3] * (n - 1),
            "timezone": ["Europe/Berlin"] * n,
            "ds": [day] * n,
        },
        schema=RAW_USERS,
    )


def _rows(warehouse: BigQueryWarehouse, table: str, order_by: str) -> list[dict]:
    return warehouse.query(f"select * from {warehouse.table_ref(table)} order by {order_by}").to_pylist()


def model(name: str, path: str, partitioned: bool = True) -> SqlFile:
    """A test model read from the ``sql_dir`` folder (no contract: the warehouse needs none)."""
    return SqlFile(name, path, "table", partitioned, (), (), None, "")


@pytest.fixture
def sql_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of test models, used by ``render`` in place of ``sql/`` (macros and globals are kept)."""
    folder = tmp_path / "sql"
    folder.mkdir()
    monkeypatch.setattr(warehouse_module._JINJA, "loader", jinja2.FileSystemLoader(str(folder)))
    return folder


def test_bigquery_schema_maps_raw_columns_and_names_unmappable_ones() -> None:
    fields = {f.name: (f.field_type, f.mode) for f in bigquery_schema(RAW_ITEMS)}
    assert fields["tags"] == ("STRING", "REPEATED")
    assert fields["created_at"] == ("TIMESTAMP", "NULLABLE")
    assert fields["deleted"] == ("BOOL", "NULLABLE")
    assert fields["ds"] == ("DATE", "NULLABLE")
    with pytest.raises(ValueError, match=r"column 'price': Arrow type decimal128\(10, 2\) has no BigQuery"):
        bigquery_schema(pa.schema([pa.field("price", pa.decimal128(10, 2))]))


def test_load_raw_round_trips_every_raw_table(bigquery_warehouse: BigQueryWarehouse) -> None:
    wh = bigquery_warehouse
    events = _events(DS2, [("e1", "u1", "i1", "click", 1), ("e2", "u2", "i2", "impression", None)])
    items = _items(DS2, ["i1", "i2"], [["python", "rust"], []])
    users = _users(DS2, ["u1", "u2"])

    assert wh.load_raw("raw_events", events, DS2) == 2
    assert wh.load_raw("raw_items", items, DS2) == 2
    assert wh.load_raw("raw_users", users, DS2) == 2

    assert _rows(wh, "raw_events", "event_id") == events.to_pylist()
    assert _rows(wh, "raw_items", "item_id") == items.to_pylist()
    # BigQuery stores a NULL array as an empty one.
    expected_users = users.to_pylist()
    expected_users[1]["blocked_sources"] = []
    assert _rows(wh, "raw_users", "user_id") == expected_users
    tags = next(
        f for f in wh.client.get_table(f"{wh.project}.{wh.dataset}.raw_items").schema if f.name == "tags"
    )
    assert (tags.field_type, tags.mode) == ("STRING", "REPEATED")
    assert wh.client.get_table(f"{wh.project}.{wh.dataset}.raw_events").time_partitioning.field == "ds"
    # The per-load staging tables are gone.
    assert sorted(t.table_id for t in wh.client.list_tables(f"{wh.project}.{wh.dataset}")) == [
        "raw_events",
        "raw_items",
        "raw_users",
    ]


def test_rerun_of_a_ds_replaces_it_and_another_ds_adds_a_partition(
    bigquery_warehouse: BigQueryWarehouse,
) -> None:
    wh = bigquery_warehouse
    assert wh.partitions("raw_events") == []
    wh.load_raw(
        "raw_events", _events(DS1, [("a1", "u1", "i1", "click", 1), ("a2", "u1", "i2", "share", 2)]), DS1
    )
    wh.load_raw("raw_events", _events(DS2, [("b1", "u2", "i1", "click", 1)]), DS2)
    rerun = _events(DS1, [("a3", "u3", "i3", "upvote", 4)])

    assert wh.load_raw("raw_events", rerun, DS1) == 1

    # DS1 now holds only the rerun's row; DS2 keeps its one row: 1 + 1 = 2.
    assert wh.count_rows("raw_events") == 2
    assert wh.count_rows("raw_events", DS1) == 1
    assert wh.partitions("raw_events") == [DS1, DS2]
    assert [r["event_id"] for r in _rows(wh, "raw_events", "event_id")] == ["a3", "b1"]


def test_load_raw_names_the_row_with_a_null_array_element(bigquery_warehouse: BigQueryWarehouse) -> None:
    wh = bigquery_warehouse
    wh.load_raw("raw_items", _items(DS2, ["i1"], [["go"]]), DS2)
    bad = _items(DS2, ["i1", "i2", "i3"], [["go"], [], ["rust", None]])

    with pytest.raises(ValueError, match=r"raw_items: row 2 \(item_id='i3'\) has a null element in tags"):
        wh.load_raw("raw_items", bad, DS2)

    assert [r["item_id"] for r in _rows(wh, "raw_items", "item_id")] == ["i1"]


def test_run_model_materialises_a_partitioned_table_and_a_rerun_replaces_only_its_ds(
    bigquery_warehouse: BigQueryWarehouse, sql_dir: Path
) -> None:
    wh = bigquery_warehouse
    (sql_dir / "user_daily.sql").write_text(
        "select user_id, count(*) as n_events, countif(event_type in {{ ENGAGEMENT_TYPES | sql_strings }})"
        " as n_engaged, date '{{ ds }}' as ds\n"
        "from {{ ref('raw_events') }}\nwhere ds = date '{{ ds }}'\ngroup by user_id\n"
    )
    user_daily = model("user_daily", "user_daily.sql")
    wh.load_raw(
        "raw_events",
        _events(
            DS1,
            [
                ("a1", "u1", "i1", "impression", 1),
                ("a2", "u1", "i1", "click", 1),
                ("a3", "u2", "i2", "share", 2),
            ],
        ),
        DS1,
    )
    wh.load_raw("raw_events", _events(DS2, [("b1", "u1", "i3", "impression", 1)]), DS2)

    assert wh.run_model(user_daily, DS1) == 2  # u1 and u2
    assert wh.run_model(user_daily, DS2) == 1
    wh.load_raw("raw_events", _events(DS1, [("c1", "u3", "i1", "bookmark", 3)]), DS1)
    assert wh.run_model(user_daily, DS1) == 1  # only u3 arrived in the reloaded DS1

    d1, d2 = DS1, DS2
    assert _rows(wh, "user_daily", "ds, user_id") == [
        {"user_id": "u3", "n_events": 1, "n_engaged": 1, "ds": d1},
        {"user_id": "u1", "n_events": 1, "n_engaged": 0, "ds": d2},
    ]
    assert wh.client.get_table(f"{wh.project}.{wh.dataset}.user_daily").time_partitioning.field == "ds"


def test_failing_model_leaves_the_old_partition_in_place(
    bigquery_warehouse: BigQueryWarehouse, sql_dir: Path
) -> None:
    wh = bigquery_warehouse
    (sql_dir / "good.sql").write_text("select 'u1' as user_id, date '{{ ds }}' as ds\n")
    # Fails only when rows are produced, i.e. in the INSERT after the DELETE of the same transaction.
    (sql_dir / "bad.sql").write_text("select error('feature overflow') as user_id, date '{{ ds }}' as ds\n")
    wh.run_model(model("daily", "good.sql"), DS1)

    with pytest.raises(SqlError, match=r"sql/bad\.sql failed for ds=2026-11-21: .*feature overflow"):
        wh.run_model(model("daily", "bad.sql"), DS1)

    assert wh.count_rows("daily", DS1) == 1


def test_unpartitioned_model_is_replaced_whole(bigquery_warehouse: BigQueryWarehouse, sql_dir: Path) -> None:
    wh = bigquery_warehouse
    (sql_dir / "catalog_size.sql").write_text(
        "select count(*) as n_items, date '{{ ds }}' as built_for from {{ ref('raw_items') }}\n"
    )
    catalog_size = model("catalog_size", "catalog_size.sql", partitioned=False)
    wh.load_raw("raw_items", _items(DS1, ["i1", "i2"], [["go"], ["rust"]]), DS1)

    wh.run_model(catalog_size, DS1)
    wh.load_raw("raw_items", _items(DS2, ["i3"], [None]), DS2)
    assert wh.run_model(catalog_size, DS2) == 1

    # 2 items from DS1 + 1 from DS2 = 3, and the DS1 row is gone.
    assert _rows(wh, "catalog_size", "built_for") == [{"n_items": 3, "built_for": DS2}]


def test_query_file_renders_params_and_returns_rows(
    bigquery_warehouse: BigQueryWarehouse, sql_dir: Path
) -> None:
    wh = bigquery_warehouse
    (sql_dir / "active_users.sql").write_text(
        "select user_id, count(*) as n from {{ ref('raw_events') }}\n"
        "where ds = date '{{ ds }}'\ngroup by user_id\nhaving count(*) >= {{ params.min_events }}\n"
        "order by user_id\n"
    )
    wh.load_raw(
        "raw_events",
        _events(
            DS2,
            [("e1", "u1", "i1", "click", 1), ("e2", "u1", "i2", "click", 2), ("e3", "u2", "i1", "click", 1)],
        ),
        DS2,
    )

    assert wh.query_file("active_users.sql", DS2, min_events=2).to_pylist() == [{"user_id": "u1", "n": 2}]
    assert wh.query_file("active_users.sql", DS2, min_events=1).num_rows == 2


def _tiny_world() -> dict[str, dict[str, pa.Table]]:
    """Two days of a 3-user, 4-post world; DS2 carries one unknown user and one duplicate delivery."""
    return {
        DS1: {
            "raw_users": _users(DS1, ["u1", "u2", "u3"]),
            "raw_items": _items(DS1, ["i1", "i2", "i3"], [["python", "pandas"], ["rust"], ["go", "grpc"]]),
            "raw_events": _events(
                DS1,
                [
                    ("a1", "u1", "i1", "impression", 1),
                    ("a2", "u1", "i1", "click", 1),
                    ("a3", "u1", "i2", "impression", 2),
                    ("a4", "u2", "i2", "impression", 1),
                    ("a5", "u2", "i2", "click", 1),
                    ("a6", "u2", "i2", "upvote", 1),
                    ("a7", "u3", "i3", "impression", 1),
                ],
            ),
        },
        DS2: {
            "raw_users": _users(DS2, ["u4"]),
            "raw_items": _items(DS2, ["i4"], [["python", "llm"]]),
            "raw_events": _events(
                DS2,
                [
                    ("b1", "u1", "i4", "impression", 1),
                    ("b2", "u1", "i4", "click", 1),
                    ("b3", "u1", "i4", "bookmark", 1),
                    ("b4", "u3", "i1", "impression", 2),
                    ("b5", "u3", "i1", "click", 2),
                    ("b6", "u4", "i3", "impression", 1),
                    ("b7", "u9", "i3", "click", 1),  # unknown user: quarantined
                    ("b6", "u4", "i3", "impression", 1),  # delivered twice: quarantined
                ],
            ),
        },
    }


def _canonical(value: object) -> object:
    """A hashable, order-insensitive-at-the-top form of a row value (floats to 9 significant digits)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, list):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _canonical(v)) for k, v in value.items()))
    return value


def test_feature_models_match_duckdb(bigquery_warehouse: BigQueryWarehouse, tmp_path: Path) -> None:
    """The real feature SQL over two days of a tiny world, on the emulator and on DuckDB: the same tables,
    and the same rows from the quality, training and serving queries of the second day."""
    from pipelines.core.settings import Settings
    from pipelines.core.sql_params import sql_params

    params = sql_params(Settings())
    # The read-only queries, with windows that reach back over both days of the world.
    read_params = {**params, "train_days": 1, "eval_days": 1, "max_item_age_days": 30, "window_days": 1}
    catalog = load_catalog()
    queries = sorted(catalog.queries)
    backends = {"bigquery": bigquery_warehouse, "duckdb": DuckDBWarehouse(tmp_path / "w.duckdb")}
    counts: dict[str, dict[tuple[str, str], int]] = {name: {} for name in backends}
    tables: dict[str, dict[str, list]] = {name: {} for name in backends}
    failures: dict[str, str] = {}
    for name, wh in backends.items():
        for ds, raw in _tiny_world().items():
            for table, rows in raw.items():
                wh.load_raw(table, rows, ds)
            for model in catalog.models:
                try:
                    counts[name][(model.name, ds)] = wh.run_model(model, ds, **params)
                except SqlError as exc:
                    failures.setdefault(f"{name}:{model.name}", str(exc).splitlines()[0][:400])
        for model in catalog.models:
            if wh.table_exists(model.name):
                rows = wh.query(f"select * from {wh.table_ref(model.name)}").to_pylist()
                tables[name][model.name] = sorted(map(_canonical, rows), key=repr)
        for query in queries:
            try:
                rows = wh.run_query(query, DS2, **read_params).to_pylist()
                tables[name][query] = sorted(map(_canonical, rows), key=repr)
            except SqlError as exc:
                failures.setdefault(f"{name}:{query}", str(exc).splitlines()[0][:400])
    backends["duckdb"].close()

    assert failures == {}
    assert counts["bigquery"] == counts["duckdb"]
    for name in [m.name for m in catalog.models] + queries:
        assert tables["bigquery"][name] == tables["duckdb"][name], name
    # The quarantine of DS2 holds the unknown user's event and the second copy of b6: 2 rows.
    assert counts["duckdb"][("quarantine", DS2)] == 2


def test_published_lake_files_load_into_a_ds_partition(
    bigquery_warehouse: BigQueryWarehouse, tmp_path: Path
) -> None:
    """A local lake: each file goes up through a load job. The ``gs://`` path (one load job reading the
    bucket) cannot be exercised here: bqemulator does not read from GCS."""
    wh = bigquery_warehouse
    lake = Lake(str(tmp_path / "lake"))
    shards = [
        candidate_rows([("u1", 1, "p1", 0.5), ("u1", 2, "p2", 0.25)]),
        candidate_rows([("u2", 1, "p3", 0.75)]),
    ]
    publish_shards(lake, LakePaths.candidates(DS1), shards)
    publish_shards(lake, LakePaths.candidates(DS2), [candidate_rows([("u9", 1, "p9", 0.125)])])

    assert wh.load_published("candidates", lake, LakePaths.candidates(DS1), DS1, CANDIDATES) == 3
    assert wh.load_published("candidates", lake, LakePaths.candidates(DS2), DS2, CANDIDATES) == 1
    publish_shards(lake, LakePaths.candidates(DS2), [candidate_rows([("u8", 1, "p8", 0.5)])])
    assert wh.load_published("candidates", lake, LakePaths.candidates(DS2), DS2, CANDIDATES) == 1

    d1, d2 = DS1, DS2
    assert _rows(wh, "candidates", "ds, user_id, rank") == [
        {**row, "ds": d1} for row in pa.concat_tables(shards).to_pylist()
    ] + [{**candidate_rows([("u8", 1, "p8", 0.5)]).to_pylist()[0], "ds": d2}]
    assert wh.client.get_table(f"{wh.project}.{wh.dataset}.candidates").time_partitioning.field == "ds"
    leftovers = [
        t.table_id
        for t in wh.client.list_tables(f"{wh.project}.{wh.dataset}")
        if t.table_id.startswith("_load")
    ]
    assert leftovers == []
