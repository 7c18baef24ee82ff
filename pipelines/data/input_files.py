"""Users' own CSV and Parquet files read batch by batch into the raw schemas.

Own data follows the raw schemas in :mod:`pipelines.core.schema` without the ``ds`` column (it is derived:
an event's date, a post's creation date, a user's signup date, all in UTC). In CSV files, list columns
(``tags``, ``selected_tags``, ``blocked_tags``, ``blocked_sources``) hold ``|``-separated values and
timestamps are ISO 8601 (a missing zone means UTC). CSV files are read with pyarrow's streaming reader
and Parquet files row group by row group, so memory is bounded by a batch. An error names the file and,
where known, the row (or line) and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.core.errors import UserError
from pipelines.core.schema import PARTITION_COLUMN, RAW_SCHEMAS

# The column whose UTC date becomes ``ds`` for each raw table.
DS_SOURCE = {"raw_events": "event_ts", "raw_items": "created_at", "raw_users": "signup_ts"}
LIST_SEPARATOR = "|"
# One CSV batch (about 15k rows of events); the reader buffers a few dozen batches ahead.
CSV_BLOCK_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 131_072
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
_ZONE_SUFFIX = r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"


class InputFileError(UserError, ValueError):
    """An input file cannot be read or does not match the documented schema; the message names the file
    and, where known, the row and the column."""


def iter_table_file(path: str | Path, table: str) -> Iterator[tuple[int, pa.Table]]:
    """Read a CSV or Parquet file holding rows of raw table ``table`` batch by batch.

    Yields:
        ``(first_row, rows)``: the 1-based number of the batch's first data row and the batch converted
        to the raw schema with ``ds`` added.

    Raises:
        InputFileError: a missing, empty or unreadable file, an unknown format, missing or extra columns,
            a malformed line, bytes that are not UTF-8, or a value that cannot be converted.
    """
    path = existing_file(path)
    wanted = [f for f in RAW_SCHEMAS[table] if f.name != PARTITION_COLUMN]
    if path.suffix == ".parquet":
        batches = _parquet_batches(path, table, wanted)
    elif path.suffix == ".csv":
        batches = _csv_batches(path, table, wanted)
    else:
        raise InputFileError(f"{path}: expected a .csv or .parquet file")
    first = 1
    for batch in batches:
        columns = [_convert(path, first, batch.column(f.name), f) for f in wanted]
        rows = pa.Table.from_arrays(columns, schema=pa.schema(wanted))
        yield first, _with_ds(rows, table, f"{path}", first)
        first += batch.num_rows


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path, checked to be a file.

    Raises:
        InputFileError: there is nothing at ``path``, or something that is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    return path


def read_table_file(path: str | Path, table: str) -> pa.Table:
    """The whole of a CSV or Parquet file of raw table ``table``, with ``ds`` added (small files, tests).

    Raises:
        InputFileError: as for :func:`iter_table_file`.
    """
    parts = [rows for _, rows in iter_table_file(path, table)]
    return pa.concat_tables(parts) if parts else RAW_SCHEMAS[table].empty_table()


def _check_columns(path: Path, table: str, names: list[str], wanted: list[pa.Field]) -> None:
    missing = [f.name for f in wanted if f.name not in names]
    extra = [c for c in names if c not in RAW_SCHEMAS[table].names]
    if missing or extra:
        raise InputFileError(f"{path}: columns do not match {table}: missing {missing}, unexpected {extra}")


def _csv_header(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise InputFileError(f"{path}: the file is empty; expected a header row naming the columns")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: line 1 (the header) is not UTF-8: {exc.reason}") from exc
    return next(csv.reader([text]))


def _csv_batches(path: Path, table: str, wanted: list[pa.Field]) -> Iterator[pa.RecordBatch]:
    names = _csv_header(path)
    _check_columns(path, table, names, wanted)
    bad: list[pacsv.InvalidRow] = []

    def keep_first_bad_row(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=keep_first_bad_row),
            # Bytes first: UTF-8 is checked per column below, so an error can name the row and column.
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.binary()), strings_can_be_null=True
            ),
        )
        for batch in reader:
            _raise_bad_line(path, bad)
            yield batch
    except pa.ArrowInvalid as exc:
        raise InputFileError(f"{path}: {exc}") from exc
    _raise_bad_line(path, bad)


def _raise_bad_line(path: Path, bad: list[pacsv.InvalidRow]) -> None:
    if bad:
        row = bad[0]
        raise InputFileError(
            f"{path}: line {row.number} has {row.actual_columns} fields, expected {row.expected_columns}"
        )


def _parquet_batches(path: Path, table: str, wanted: list[pa.Field]) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    _check_columns(path, table, parquet.schema_arrow.names, wanted)
    try:
        yield from parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file: {exc}") from exc


def _convert(path: Path, first: int, column: pa.Array, field: pa.Field) -> pa.Array:
    where = f"{path}: column {field.name!r}"
    if pa.types.is_binary(column.type):
        column = utf8_column(column, where, first)
    if column.type == field.type:
        return column
    try:
        if pa.types.is_list(field.type) and pa.types.is_string(column.type):
            return pc.split_pattern(column, LIST_SEPARATOR)
        if pa.types.is_timestamp(field.type) and pa.types.is_string(column.type):
            return _parse_timestamps(column, where, first)
        if pa.types.is_boolean(field.type) and pa.types.is_string(column.type):
            lowered = pc.utf8_lower(column)
            return pc.if_else(pc.is_in(lowered, pa.array(["true", "1", "yes"])), True, False).cast(pa.bool_())
        return column.cast(field.type)
    except InputFileError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        bad = _first_bad_row(column.to_pylist(), field)
        raise InputFileError(f"{where} row {first + bad}: {exc}") from exc


def utf8_column(column: pa.Array | pa.ChunkedArray, where: str, first: int = 1) -> pa.Array | pa.ChunkedArray:
    """A binary column as text, checked to be UTF-8.

    Raises:
        InputFileError: a value is not UTF-8; the message is ``where`` with the row (``first`` being the
            number of the column's first row) and the bad bytes.
    """
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        for i, value in enumerate(column.to_pylist()):
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(
                    f"{where} row {first + i}: not UTF-8 ({value[exc.start : exc.start + 4]!r} at byte "
                    f"{exc.start})",
                    hint="save the file as UTF-8",
                ) from exc
        raise


def _parse_timestamps(column: pa.Array, where: str, first: int) -> pa.Array:
    """ISO 8601 text as UTC timestamps (a missing zone means UTC): vectorised, with Python's parser for a
    batch Arrow cannot read, so an error names the row."""
    zoned = pc.match_substring_regex(column, _ZONE_SUFFIX)
    try:
        with_zone = pc.if_else(zoned, column, pa.scalar(None, pa.string())).cast(UTC_TIMESTAMP)
        naive = (
            pc.if_else(zoned, pa.scalar(None, pa.string()), column)
            .cast(pa.timestamp("us"))
            .cast(UTC_TIMESTAMP)
        )
        return pc.if_else(zoned, with_zone, naive)
    except pa.ArrowInvalid:
        pass
    parsed = []
    for i, value in enumerate(column.to_pylist()):
        if value is None or value == "":
            parsed.append(None)
            continue
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise InputFileError(f"{where} row {first + i}: {value!r} is not an ISO 8601 timestamp") from exc
        parsed.append(ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC))
    return pa.array(parsed, type=UTC_TIMESTAMP)


def _first_bad_row(values: list[object], field: pa.Field) -> int:
    for i, value in enumerate(values):
        try:
            pa.array([value]).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            return i
    return 0


def _with_ds(rows: pa.Table, table: str, origin: str, first: int = 1) -> pa.Table:
    source = rows.column(DS_SOURCE[table])
    if source.null_count:
        bad = int(np.flatnonzero(pc.is_null(source).to_numpy(zero_copy_only=False))[0]) + first
        raise InputFileError(
            f"{origin}: column {DS_SOURCE[table]!r} row {bad} is empty; it decides the partition (ds)"
        )
    ds = pc.cast(source, pa.date32())
    return rows.append_column(pa.field(PARTITION_COLUMN, pa.date32()), ds).cast(RAW_SCHEMAS[table])


def _typed(rows: pa.Table, table: str) -> pa.Table:
    fields = [f for f in RAW_SCHEMAS[table] if f.name != PARTITION_COLUMN]
    return pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in fields], schema=pa.schema(fields))


def typed_with_ds(rows: pa.Table, table: str, origin: str) -> pa.Table:
    """``rows`` (the raw columns but ``ds``) cast to raw table ``table``'s schema, with ``ds`` derived.

    Raises:
        InputFileError: a row has no timestamp to derive ``ds`` from (``origin`` is named).
    """
    return _with_ds(_typed(rows, table), table, origin)
