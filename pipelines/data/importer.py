"""Import users' own data into the raw tables from CSV or Parquet files.

Own data follows the raw schemas in :mod:`pipelines.core.schema` without the ``ds`` column (it is derived:
an event's date, a post's creation date, a user's signup date, all in UTC). In CSV files, list columns
(``tags``, ``selected_tags``, ``blocked_tags``, ``blocked_sources``) hold ``|``-separated values and
timestamps are ISO 8601 (a missing zone means UTC). Columns are checked before anything is loaded; an
error names the file, the column and the first bad row.
"""

from __future__ import annotations

import datetime as dt
import logging
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


def _typed(rows: pa.Table, table: str) -> pa.Table:
    fields = [f for f in RAW_SCHEMAS[table] if f.name != PARTITION_COLUMN]
    return pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in fields], schema=pa.schema(fields))


def typed_with_ds(rows: pa.Table, table: str) -> pa.Table:
    """``rows`` (the raw columns but ``ds``) cast to raw table ``table``'s schema, with ``ds`` derived."""
    return _with_ds(_typed(rows, table), table)
