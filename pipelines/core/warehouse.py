"""The warehouse: BigQuery in production, DuckDB embedded, behind one interface.

SQL is written once, in BigQuery dialect, in ``sql/**.sql``: one ``select`` per file, templated with
Jinja on ``ds`` (``{{ ds }}``), table references (``{{ ref('stg_events') }}``) and typed parameters
(``{{ params.window_days }}``). The DuckDB backend transpiles it with sqlglot. Materialisation (create,
replace a ``ds`` partition whole, load rows) is built here from sqlglot expressions, never from
string formatting, so a rerun of a day replaces that day and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from pipelines.core import schema
from pipelines.core.schema import PARTITION_COLUMN, RAW_SCHEMAS, SQL_DIR, SqlModel
from pipelines.core.settings import Settings

if TYPE_CHECKING:
    from pipelines.core.lake import Lake

log = logging.getLogger(__name__)


class SqlError(RuntimeError):
    """A SQL file failed to render, parse or run; the message names the file."""


_JINJA = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(SQL_DIR)),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


def _sql_strings(values: tuple[str, ...]) -> str:
    """A SQL list literal ``('a', 'b')`` of the project's constant vocabularies."""
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


_JINJA.filters["sql_strings"] = _sql_strings
_JINJA.globals.update(
    EVENT_TYPES=schema.EVENT_TYPES,
    ENGAGEMENT_TYPES=schema.ENGAGEMENT_TYPES,
    POST_TYPES=schema.POST_TYPES,
    CONTENT_TYPES=schema.CONTENT_TYPES,
    DIGEST_FREQUENCIES=schema.DIGEST_FREQUENCIES,
)


def _check_param(name: str, value: Any) -> Any:
    # Parameters are substituted into SQL text, so only plain typed scalars are allowed.
    if isinstance(value, bool) or value is None:
        raise SqlError(f"SQL parameter {name!r} must be an int, float, date or simple name, got {value!r}")
    if isinstance(value, int | float):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and value.replace("_", "").replace("-", "").isalnum():
        return value
    raise SqlError(f"SQL parameter {name!r} has an unsafe value {value!r}")


class Warehouse(ABC):
    """Runs BigQuery-dialect SQL files and materialises their results as (partitioned) tables."""

    dialect: str

    # -- naming and rendering ------------------------------------------------------------------------
    @abstractmethod
    def table_ref(self, name: str) -> str:
        """Fully qualified reference to table ``name``, as it appears in BigQuery-dialect SQL."""

    def render(self, sql_path: str | Path, ds: dt.date, **params: Any) -> str:
        """Render ``sql/<sql_path>`` for ``ds`` into BigQuery-dialect SQL.

        Raises:
            SqlError: the file is missing or uses an undefined name or unsafe parameter.
        """
        rel = str(Path(sql_path).relative_to(SQL_DIR)) if Path(sql_path).is_absolute() else str(sql_path)
        try:
            template = _JINJA.get_template(rel)
            return template.render(
                ds=ds.isoformat(),
                ref=self.table_ref,
                params={k: _check_param(k, v) for k, v in params.items()},
            )
        except (jinja2.TemplateError, SqlError) as exc:
            raise SqlError(f"sql/{rel}: {exc}") from exc

    def compile(self, bigquery_sql: str, origin: str = "<sql>") -> str:
        """Translate BigQuery-dialect SQL into this backend's dialect."""
        if self.dialect == "bigquery":
            return bigquery_sql
        try:
            statements = sqlglot.transpile(bigquery_sql, read="bigquery", write=self.dialect, pretty=True)
        except sqlglot.errors.ParseError as exc:
            raise SqlError(f"{origin}: not valid BigQuery SQL: {exc}") from exc
        if len(statements) != 1:
            raise SqlError(f"{origin}: expected one statement, found {len(statements)}")
        return statements[0]

    # -- running -------------------------------------------------------------------------------------
    def query_file(self, sql_path: str, ds: dt.date, **params: Any) -> pa.Table:
        """Run the ``select`` in ``sql/<sql_path>`` for ``ds`` and return its rows."""
        sql = self.compile(self.render(sql_path, ds, **params), origin=f"sql/{sql_path}")
        try:
            return self._query_arrow(sql)
        except Exception as exc:
            raise SqlError(f"sql/{sql_path} failed for ds={ds}: {exc}") from exc

    def run_model(self, model: SqlModel, ds: dt.date, **params: Any) -> int:
        """Materialise ``model`` for ``ds``: replace its ``ds`` partition (or the whole table).

        Returns:
            The number of rows now in that partition (or table).
        """
        select_sql = self.compile(self.render(model.path, ds, **params), origin=f"sql/{model.path}")
        started = time.perf_counter()
        try:
            rows = self._replace(model.name, select_sql, ds if model.partitioned else None)
        except Exception as exc:
            raise SqlError(f"sql/{model.path} failed for ds={ds}: {exc}") from exc
        log.debug("%s ds=%s: %d rows in %.2fs", model.name, ds, rows, time.perf_counter() - started)
        return rows

    def load_raw(self, table: str, rows: pa.Table, ds: dt.date) -> int:
        """Replace partition ``ds`` of raw table ``table`` with ``rows`` (its schema is checked).

        Raises:
            ValueError: unknown raw table, or ``rows`` does not match the raw schema or has other ds.
        """
        if table not in RAW_SCHEMAS:
            raise ValueError(f"unknown raw table {table!r}; expected one of {sorted(RAW_SCHEMAS)}")
        schema = RAW_SCHEMAS[table]
        if rows.schema.names != schema.names:
            raise ValueError(f"{table}: columns {rows.schema.names} do not match {schema.names}")
        rows = rows.cast(schema)
        other = set(rows.column(PARTITION_COLUMN).to_pylist()) - {ds}
        if other:
            raise ValueError(f"{table}: rows for ds={ds} carry other ds values {sorted(other)[:3]}")
        return self._load_partition(table, rows, ds)

    def load_published(self, table: str, lake: Lake, dataset: str, ds: dt.date, columns: pa.Schema) -> int:
        """Replace partition ``ds`` of ``table`` with the Parquet files published as lake ``dataset``.

        The rows are the files' ``columns`` plus ``ds``. Files are never gathered in memory: DuckDB
        inserts them one at a time and BigQuery loads them itself (straight from GCS for a ``gs://``
        lake). The partition is swapped in one transaction, so readers see the old rows or the new ones.

        Returns:
            The number of rows now in the partition.

        Raises:
            pipelines.core.lake.ManifestError: ``dataset`` is not published.
            ValueError: ``columns`` has a ``ds`` column, or a file's columns differ (named).
        """
        if PARTITION_COLUMN in columns.names:
            raise ValueError(f"{table}: the loaded columns must not include {PARTITION_COLUMN!r}")
        files = lake.manifest_files(dataset)
        if not files:
            raise ValueError(f"{lake.uri(dataset)} is published with no files; nothing to load")
        started = time.perf_counter()
        rows = self._load_files(table, lake, files, ds, columns)
        log.info(
            "%s ds=%s: %d rows from %d files in %.1f s",
            table,
            ds,
            rows,
            len(files),
            time.perf_counter() - started,
        )
        return rows

    def _from_with_ds(self, source: exp.Table, ds: dt.date) -> str:
        partition = exp.alias_(exp.cast(exp.Literal.string(ds.isoformat()), "DATE"), PARTITION_COLUMN)
        return exp.select("*", partition).from_(source).sql(dialect=self.dialect)

    @abstractmethod
    def _load_files(
        self, table: str, lake: Lake, files: Sequence[str], ds: dt.date, columns: pa.Schema
    ) -> int: ...

    @abstractmethod
    def _query_arrow(self, sql: str) -> pa.Table: ...

    @abstractmethod
    def _replace(self, table: str, select_sql: str, ds: dt.date | None) -> int: ...

    @abstractmethod
    def _load_partition(self, table: str, rows: pa.Table, ds: dt.date) -> int: ...

    @abstractmethod
    def table_exists(self, name: str) -> bool: ...

    def query(self, bigquery_sql: str) -> pa.Table:
        """Run an ad-hoc BigQuery-dialect query (tests, tools); pipelines use ``query_file``."""
        return self._query_arrow(self.compile(bigquery_sql))

    def count_rows(self, table: str, ds: dt.date | None = None) -> int:
        """Rows in ``table``, or in its partition ``ds``."""
        q = exp.select("count(*)").from_(exp.to_table(self.table_ref(table), dialect="bigquery"))
        if ds is not None:
            q = q.where(_ds_equals(ds))
        return int(self.query(q.sql(dialect="bigquery")).column(0)[0].as_py())

    def partitions(self, table: str) -> list[dt.date]:
        """The ``ds`` values present in ``table``, ascending."""
        if not self.table_exists(table):
            return []
        tbl = exp.to_table(self.table_ref(table), dialect="bigquery")
        q = (
            exp.select(exp.column(PARTITION_COLUMN))
            .distinct()
            .from_(tbl)
            .order_by(exp.column(PARTITION_COLUMN))
        )
        return self.query(q.sql(dialect="bigquery")).column(0).to_pylist()

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_file_columns(uri: str, names: list[str], columns: pa.Schema) -> None:
    if names != columns.names:
        raise ValueError(f"{uri}: columns {names}, expected {columns.names}")


def _bigquery_integers(table: pa.Table) -> pa.Table:
    """Give DuckDB results BigQuery's integer type: its counts and sums come back as DECIMAL(38, 0) (HUGEINT)
    and small literals as INT32, where BigQuery returns INT64 for all of them."""
    fields = []
    for field in table.schema:
        kind = field.type
        if (pa.types.is_decimal(kind) and kind.scale == 0) or pa.types.is_int32(kind):
            field = field.with_type(pa.int64())
        fields.append(field)
    schema = pa.schema(fields)
    return table if schema.equals(table.schema) else table.cast(schema)


def _ds_equals(ds: dt.date) -> exp.Expression:
    return exp.EQ(
        this=exp.column(PARTITION_COLUMN), expression=exp.cast(exp.Literal.string(ds.isoformat()), "DATE")
    )


def _replace_statements(table: exp.Table, select_sql: str, dialect: str, ds: dt.date | None) -> list[str]:
    """Statements that create ``table`` if needed and replace partition ``ds`` (or all rows)."""
    select = sqlglot.parse_one(select_sql, read=dialect)
    empty = exp.select("*").from_(select.subquery("src")).where(exp.false())
    create = exp.Create(this=table, kind="TABLE", exists=True, expression=empty)
    if ds is not None and dialect == "bigquery":
        create.set(
            "properties",
            exp.Properties(expressions=[exp.PartitionedByProperty(this=exp.column(PARTITION_COLUMN))]),
        )
    where = _ds_equals(ds) if ds is not None else exp.true()
    delete = exp.delete(table, where=where)
    insert = exp.insert(exp.select("*").from_(select.subquery("src")), table)
    return [s.sql(dialect=dialect) for s in (create, delete, insert)]


class DuckDBWarehouse(Warehouse):
    """The embedded warehouse: a DuckDB file, one writer process at a time."""

    dialect = "duckdb"

    def __init__(self, path: str | Path, read_only: bool = False, lock_timeout_s: float = 600.0) -> None:
        import duckdb

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_timeout_s
        while True:
            try:
                self.con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                # Another Airflow task holds the file; DuckDB allows one writer process.
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        # BigQuery evaluates timestamps in UTC; DuckDB would use the machine's zone.
        self._run("set TimeZone = 'UTC'")
        self._run("set preserve_insertion_order = true")

    def _run(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        # DuckDB wants every result drained before the connection runs anything else.
        return self.con.execute(sql, params or []).fetchall()

    def table_ref(self, name: str) -> str:
        return f"`{name}`"

    def _query_arrow(self, sql: str) -> pa.Table:
        return _bigquery_integers(self.con.sql(sql).to_arrow_table())

    def _replace(self, table: str, select_sql: str, ds: dt.date | None) -> int:
        tbl = exp.to_table(table)
        statements = _replace_statements(tbl, select_sql, "duckdb", ds)
        self._run("begin transaction")
        try:
            for stmt in statements:
                self._run(stmt)
            self._run("commit")
        except Exception:
            self._run("rollback")
            raise
        return self.count_rows(table, ds)

    def _load_partition(self, table: str, rows: pa.Table, ds: dt.date) -> int:
        self.con.register("_nightfeed_load", rows)
        try:
            return self._replace(table, "select * from _nightfeed_load", ds)
        finally:
            self.con.unregister("_nightfeed_load")

    def _load_files(
        self, table: str, lake: Lake, files: Sequence[str], ds: dt.date, columns: pa.Schema
    ) -> int:
        source = "_nightfeed_load"
        create, delete, insert = _replace_statements(
            exp.to_table(table), self._from_with_ds(exp.to_table(source), ds), "duckdb", ds
        )
        self._run("begin transaction")
        try:
            for i, path in enumerate(files):
                rows = lake.read_parquet(path)
                _check_file_columns(lake.uri(path), rows.schema.names, columns)
                self.con.register(source, rows.cast(columns))
                try:
                    for stmt in [create, delete, insert] if i == 0 else [insert]:
                        self._run(stmt)
                finally:
                    self.con.unregister(source)
            self._run("commit")
        except Exception:
            self._run("rollback")
            raise
        return self.count_rows(table, ds)

    def table_exists(self, name: str) -> bool:
        found = self._run("select count(*) from information_schema.tables where table_name = ?", [name])
        return bool(found[0][0])

    def close(self) -> None:
        self.con.close()


class BigQueryWarehouse(Warehouse):
    """Google BigQuery through the official client; tables live in ``project.dataset``."""

    dialect = "bigquery"

    def __init__(
        self, project: str, dataset: str, location: str = "US", api_endpoint: str | None = None
    ) -> None:
        from google.cloud import bigquery

        self._bq = bigquery
        kwargs: dict[str, Any] = {"project": project, "location": location}
        if api_endpoint:
            # A local emulator: no credentials, explicit endpoint.
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
            kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
        self.client = bigquery.Client(**kwargs)
        self.project, self.dataset = project, dataset
        self.client.create_dataset(f"{project}.{dataset}", exists_ok=True)

    def table_ref(self, name: str) -> str:
        return f"`{self.project}.{self.dataset}.{name}`"

    def _query_arrow(self, sql: str) -> pa.Table:
        return self.client.query(sql).result().to_arrow(create_bqstorage_client=False)

    def _table(self, name: str) -> exp.Table:
        # Quoted part by part: project ids may contain dashes, which are only valid unquoted in some
        # positions of a BigQuery table path.
        return exp.table_(name, db=self.dataset, catalog=self.project, quoted=True)

    def _replace(self, table: str, select_sql: str, ds: dt.date | None) -> int:
        create, delete, insert = _replace_statements(self._table(table), select_sql, "bigquery", ds)
        # One multi-statement job: the delete and insert commit together, so readers never see the
        # partition empty or doubled; a failing insert rolls the delete back.
        script = ";\n".join([create, "BEGIN TRANSACTION", delete, insert, "COMMIT TRANSACTION"]) + ";"
        self.client.query(script).result()
        return self.count_rows(table, ds)

    @contextlib.contextmanager
    def _staging_table(self, table: str, ds: dt.date, columns: pa.Schema) -> Iterator[tuple[str, Any]]:
        """A private table to load into, deleted afterwards: concurrent loads never share one, and a load
        killed before its cleanup leaves a table that expires by itself. Yields its id and schema."""
        staging_id = f"{self.project}.{self.dataset}._load_{table}_{ds:%Y%m%d}_{uuid.uuid4().hex[:8]}"
        schema = bigquery_schema(columns)
        staging_table = self._bq.Table(staging_id, schema=schema)
        staging_table.expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        self.client.create_table(staging_table)
        try:
            yield staging_id, schema
        finally:
            self.client.delete_table(staging_id, not_found_ok=True)

    def _parquet_load(self, schema: Any, disposition: str = "WRITE_TRUNCATE") -> Any:
        parquet_options = self._bq.ParquetOptions()
        parquet_options.enable_list_inference = True  # Parquet LIST<STRING> -> REPEATED STRING
        return self._bq.LoadJobConfig(
            schema=schema,
            write_disposition=disposition,
            source_format=self._bq.SourceFormat.PARQUET,
            parquet_options=parquet_options,
        )

    def _from_staging(self, staging_id: str) -> exp.Table:
        return self._table(staging_id.rsplit(".", 1)[1])

    def _load_partition(self, table: str, rows: pa.Table, ds: dt.date) -> int:
        _reject_null_array_elements(table, rows)
        # Arrow -> Parquet directly: no pandas round trip, so INT64 columns with nulls stay exact.
        buf = io.BytesIO()
        pq.write_table(rows, buf)
        with self._staging_table(table, ds, rows.schema) as (staging_id, schema):
            load = self._parquet_load(schema)
            self.client.load_table_from_file(buf, staging_id, job_config=load, rewind=True).result()
            staged = exp.select("*").from_(self._from_staging(staging_id))
            return self._replace(table, staged.sql(dialect="bigquery"), ds)

    def _load_files(
        self, table: str, lake: Lake, files: Sequence[str], ds: dt.date, columns: pa.Schema
    ) -> int:
        with self._staging_table(table, ds, columns) as (staging_id, schema):
            if lake.protocol == "gs":
                # BigQuery reads the shards from GCS itself: one load job, nothing passes through here.
                uris = [lake.uri(path) for path in files]
                self.client.load_table_from_uri(
                    uris, staging_id, job_config=self._parquet_load(schema)
                ).result()
            else:
                for i, path in enumerate(files):
                    data = io.BytesIO(lake.read_bytes(path))
                    _check_file_columns(lake.uri(path), pq.read_schema(data).names, columns)
                    load = self._parquet_load(schema, "WRITE_TRUNCATE" if i == 0 else "WRITE_APPEND")
                    self.client.load_table_from_file(data, staging_id, job_config=load, rewind=True).result()
            return self._replace(table, self._from_with_ds(self._from_staging(staging_id), ds), ds)

    def table_exists(self, name: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(f"{self.project}.{self.dataset}.{name}")
            return True
        except NotFound:
            return False

    def close(self) -> None:
        self.client.close()


def bigquery_schema(schema: pa.Schema) -> list[Any]:
    """BigQuery ``SchemaField``s for an Arrow schema (lists become REPEATED)."""
    from google.cloud import bigquery

    scalar = {
        pa.string(): "STRING",
        pa.int64(): "INT64",
        pa.int32(): "INT64",
        pa.float64(): "FLOAT64",
        pa.float32(): "FLOAT64",
        pa.bool_(): "BOOL",
        pa.date32(): "DATE",
        pa.timestamp("us", tz="UTC"): "TIMESTAMP",
    }
    fields = []
    for field in schema:
        repeated = pa.types.is_list(field.type)
        value_type = field.type.value_type if repeated else field.type
        if value_type not in scalar:
            raise ValueError(
                f"column {field.name!r}: Arrow type {field.type} has no BigQuery mapping; "
                f"expected one of {sorted(map(str, scalar))} or a list of them"
            )
        fields.append(
            bigquery.SchemaField(field.name, scalar[value_type], mode="REPEATED" if repeated else "NULLABLE")
        )
    return fields


def _reject_null_array_elements(table: str, rows: pa.Table) -> None:
    """BigQuery cannot store an ARRAY with a NULL element; say which row has one before loading.

    Raises:
        ValueError: naming the table, column, row number and the row's first column.
    """
    import pyarrow.compute as pc

    for field in rows.schema:
        if not pa.types.is_list(field.type):
            continue
        column = rows.column(field.name)
        null_element = pc.is_null(pc.list_flatten(column))
        if pc.any(null_element).as_py():
            row = pc.list_parent_indices(column).filter(null_element)[0].as_py()
            key = rows.schema.names[0]
            raise ValueError(
                f"{table}: row {row} ({key}={rows.column(0)[row].as_py()!r}) has a null element in "
                f"{field.name}; BigQuery arrays cannot hold NULL (drop the element or the row)"
            )


def open_warehouse(settings: Settings, read_only: bool = False) -> Warehouse:
    """The warehouse the settings name."""
    if settings.warehouse == "bigquery":
        assert settings.bigquery_project  # checked by Settings
        return BigQueryWarehouse(
            settings.bigquery_project,
            settings.bigquery_dataset,
            settings.bigquery_location,
            settings.bigquery_api_endpoint,
        )
    return DuckDBWarehouse(settings.duckdb_file, read_only=read_only)
