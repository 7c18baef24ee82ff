"""Import users' own data into the raw tables: CSV or Parquet files, or MovieLens-format files.

Own data follows the raw schemas in :mod:`pipelines.core.schema` without the ``ds`` column (it is derived:
an event's date, a post's creation date, a user's signup date, all in UTC). In CSV files, list columns
(``tags``, ``selected_tags``, ``blocked_tags``, ``blocked_sources``) hold ``|``-separated values and
timestamps are ISO 8601 (a missing zone means UTC). Columns are checked before anything is loaded; an
error names the file, the column and the first bad row.

MovieLens files (``u.data``, ``u.item``, ``u.user`` of the 100k release) are mapped onto the same schema:
every rating is an impression, a rating of 4 or 5 is also a click and a 5 also an upvote; genres become
tags; the post's creation time is its first rating.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.core.schema import PARTITION_COLUMN, RAW_SCHEMAS
from pipelines.core.warehouse import Warehouse

log = logging.getLogger(__name__)

# The column whose UTC date becomes ``ds`` for each raw table.
DS_SOURCE = {"raw_events": "event_ts", "raw_items": "created_at", "raw_users": "signup_ts"}
LIST_SEPARATOR = "|"
MOVIELENS_GENRES = (
    "unknown", "action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama",
    "fantasy", "film-noir", "horror", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western",
)  # fmt: skip


class InputFileError(ValueError):
    """An input file does not match the documented schema; the message names file, column and row."""


def read_table_file(path: str | Path, table: str) -> pa.Table:
    """Read a CSV or Parquet file holding rows of raw table ``table`` and return them with ``ds`` added.

    Raises:
        InputFileError: unknown format, missing or extra columns, or a value that cannot be converted.
    """
    path = Path(path)
    schema = RAW_SCHEMAS[table]
    wanted = [f for f in schema if f.name != PARTITION_COLUMN]
    if path.suffix == ".parquet":
        rows = pq.read_table(path)
    elif path.suffix == ".csv":
        text_types = {f.name: pa.string() for f in wanted}
        options = pacsv.ConvertOptions(column_types=text_types, strings_can_be_null=True)
        rows = pacsv.read_csv(path, convert_options=options)
    else:
        raise InputFileError(f"{path}: expected a .csv or .parquet file")
    missing = [f.name for f in wanted if f.name not in rows.column_names]
    extra = [c for c in rows.column_names if c not in schema.names]
    if missing or extra:
        raise InputFileError(f"{path}: columns do not match {table}: missing {missing}, unexpected {extra}")
    columns = [_convert(path, rows.column(f.name), f) for f in wanted]
    out = pa.Table.from_arrays(columns, schema=pa.schema(wanted))
    return _with_ds(out, table)


def _convert(path: Path, column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    if column.type == field.type:
        return column
    try:
        if pa.types.is_list(field.type) and pa.types.is_string(column.type):
            return pc.split_pattern(column, LIST_SEPARATOR)
        if pa.types.is_timestamp(field.type) and pa.types.is_string(column.type):
            try:
                return pa.chunked_array([_parse_timestamps(column.to_pylist())], type=field.type)
            except ValueError as exc:
                raise InputFileError(f"{path}: column {field.name!r} {exc}") from exc
        if pa.types.is_boolean(field.type) and pa.types.is_string(column.type):
            lowered = pc.utf8_lower(column)
            return pc.if_else(pc.is_in(lowered, pa.array(["true", "1", "yes"])), True, False).cast(pa.bool_())
        return column.cast(field.type)
    except InputFileError:
        raise
    except (pa.ArrowInvalid, ValueError) as exc:
        bad = _first_bad_row(column.to_pylist(), field)
        raise InputFileError(f"{path}: column {field.name!r} row {bad}: {exc}") from exc


def _parse_timestamps(values: list[str | None]) -> pa.Array:
    parsed = []
    for i, value in enumerate(values):
        if value is None or value == "":
            parsed.append(None)
            continue
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"row {i + 1}: {value!r} is not an ISO 8601 timestamp") from exc
        parsed.append(ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC))
    return pa.array(parsed, type=pa.timestamp("us", tz="UTC"))


def _first_bad_row(values: list[object], field: pa.Field) -> int:
    for i, value in enumerate(values):
        try:
            pa.array([value]).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            return i + 1
    return 0


def _with_ds(rows: pa.Table, table: str) -> pa.Table:
    source = rows.column(DS_SOURCE[table])
    if source.null_count:
        first = int(np.flatnonzero(pc.is_null(source).to_numpy(zero_copy_only=False))[0]) + 1
        raise InputFileError(f"{table}: {DS_SOURCE[table]} is empty in row {first}; it decides the partition")
    ds = pc.cast(source, pa.date32())
    return rows.append_column(pa.field(PARTITION_COLUMN, pa.date32()), ds).cast(RAW_SCHEMAS[table])


def load_tables(warehouse: Warehouse, tables: dict[str, pa.Table]) -> dict[str, int]:
    """Load raw rows into the warehouse, one ``ds`` partition at a time (each replaces its partition).

    Returns:
        Rows loaded per table.
    """
    loaded = {}
    for table, rows in tables.items():
        loaded[table] = 0
        for day in sorted(set(rows.column(PARTITION_COLUMN).to_pylist())):
            part = rows.filter(pc.equal(rows.column(PARTITION_COLUMN), pa.scalar(day, pa.date32())))
            loaded[table] += warehouse.load_raw(table, part, day)
        log.info("imported %d rows into %s", loaded[table], table)
    return loaded


def import_files(
    warehouse: Warehouse, events: str | Path, items: str | Path, users: str | Path
) -> dict[str, int]:
    """Check and load a user's own events, items and users files (CSV or Parquet).

    Raises:
        InputFileError: any file does not match its schema; nothing is loaded then.
    """
    tables = {
        "raw_events": read_table_file(events, "raw_events"),
        "raw_items": read_table_file(items, "raw_items"),
        "raw_users": read_table_file(users, "raw_users"),
    }
    return load_tables(warehouse, tables)


def read_movielens(folder: str | Path) -> dict[str, pa.Table]:
    """Map MovieLens-100k-format files (``u.data``, ``u.item``, ``u.user``) onto the raw tables.

    Raises:
        InputFileError: a file is missing or a line has the wrong number of fields.
    """
    folder = Path(folder)
    ratings = _movielens_lines(folder / "u.data", "\t", 4)
    users_ids, items_ids, stars, times = (np.array(col) for col in zip(*ratings, strict=True))
    stars = stars.astype(int)
    ts = times.astype(np.int64) * 1_000_000
    first_seen: dict[str, int] = {}
    for item, t in sorted(zip(items_ids, ts, strict=True), key=lambda p: p[1]):
        first_seen.setdefault(item, int(t))
    user_first: dict[str, int] = {}
    for user, t in sorted(zip(users_ids, ts, strict=True), key=lambda p: p[1]):
        user_first.setdefault(user, int(t))

    events: dict[str, list] = {n: [] for n in ("event_id", "user_id", "item_id", "event_type", "event_ts")}
    for k, (user, item, star, t) in enumerate(zip(users_ids, items_ids, stars, ts, strict=True)):
        kinds = ["impression"] + (["click"] if star >= 4 else []) + (["upvote"] if star == 5 else [])
        for j, kind in enumerate(kinds):
            events["event_id"].append(f"ml-{k}-{j}")
            events["user_id"].append(f"ml-u{user}")
            events["item_id"].append(f"ml-i{item}")
            events["event_type"].append(kind)
            events["event_ts"].append(int(t) + j)
    n_events = len(events["event_id"])
    event_rows = pa.table(
        {
            **{k: v for k, v in events.items() if k != "event_ts"},
            "event_ts": pa.array(events["event_ts"], pa.timestamp("us", tz="UTC")),
            "position": pa.array([0] * n_events, pa.int64()),
        }
    )

    item_lines = _movielens_lines(folder / "u.item", "|", 24, encoding="latin-1")
    item_rows = {n: [] for n in RAW_SCHEMAS["raw_items"].names if n != PARTITION_COLUMN}
    for fields in item_lines:
        item = fields[0]
        if item not in first_seen:
            continue
        genres = [g for g, flag in zip(MOVIELENS_GENRES, fields[5:], strict=True) if flag == "1"]
        item_rows["item_id"].append(f"ml-i{item}")
        item_rows["title"].append(fields[1])
        item_rows["summary"].append(", ".join(genres))
        item_rows["tags"].append(genres)
        item_rows["source"].append("movielens")
        item_rows["author"].append("unknown")
        item_rows["post_type"].append("video")
        item_rows["content_type"].append("video")
        item_rows["language"].append("en")
        item_rows["url"].append(fields[4] or f"https://movielens.org/movies/{item}")
        item_rows["created_at"].append(first_seen[item])
        item_rows["deleted"].append(False)

    user_lines = _movielens_lines(folder / "u.user", "|", 5)
    user_rows = {n: [] for n in RAW_SCHEMAS["raw_users"].names if n != PARTITION_COLUMN}
    for fields in user_lines:
        user = fields[0]
        if user not in user_first:
            continue
        user_rows["user_id"].append(f"ml-u{user}")
        user_rows["email"].append(None)
        user_rows["signup_ts"].append(user_first[user])
        user_rows["language"].append("en")
        user_rows["selected_tags"].append([])
        user_rows["blocked_tags"].append([])
        user_rows["blocked_sources"].append([])
        user_rows["digest_opt_in"].append(False)
        user_rows["digest_frequency"].append("weekly")
        user_rows["digest_weekday"].append(0)
        user_rows["timezone"].append("UTC")

    return {
        "raw_events": _with_ds(_typed(event_rows, "raw_events"), "raw_events"),
        "raw_items": _with_ds(_typed(pa.table(item_rows), "raw_items"), "raw_items"),
        "raw_users": _with_ds(_typed(pa.table(user_rows), "raw_users"), "raw_users"),
    }


def _typed(rows: pa.Table, table: str) -> pa.Table:
    fields = [f for f in RAW_SCHEMAS[table] if f.name != PARTITION_COLUMN]
    return pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in fields], schema=pa.schema(fields))


def _movielens_lines(path: Path, sep: str, n_fields: int, encoding: str = "utf-8") -> Iterable[list[str]]:
    if not path.is_file():
        raise InputFileError(f"{path}: MovieLens file not found")
    lines = []
    for number, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != n_fields:
            raise InputFileError(f"{path}: line {number} has {len(fields)} fields, expected {n_fields}")
        lines.append(fields)
    return lines


def import_movielens(warehouse: Warehouse, folder: str | Path) -> dict[str, int]:
    """Load MovieLens-format files from ``folder`` into the raw tables."""
    return load_tables(warehouse, read_movielens(folder))
