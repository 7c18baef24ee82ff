"""The warehouse interface: BigQuery-dialect SQL files rendered with Jinja, run, and materialised one ``ds``
partition at a time from sqlglot expressions (never from string formatting)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from pipelines.core import schema
from pipelines.core.schema import PARTITION_COLUMN, RAW_SCHEMAS
from pipelines.core.sql_catalog import SQL_DIR, SqlFile, load_catalog

if TYPE_CHECKING:
    from pipelines.core.lake import Lake
    from pipelines.core.lineage import Lineage

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
    # Set by the run context: the tables this run's SQL reads and the ones it writes are recorded.
    lineage: Lineage | None = None

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
                ref=self._read_ref,
                params={k: _check_param(k, v) for k, v in params.items()},
            )
        except (jinja2.TemplateError, SqlError) as exc:
            raise SqlError(f"sql/{rel}: {exc}") from exc

    def _read_ref(self, name: str) -> str:
        if self.lineage is not None:
            self.lineage.read(*self.lineage_name(name))
        return self.table_ref(name)

    def _wrote(self, name: str) -> None:
        if self.lineage is not None:
            self.lineage.wrote(*self.lineage_name(name))

    @abstractmethod
    def lineage_name(self, table: str) -> tuple[str, str]:
        """OpenLineage namespace and name of ``table``."""

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

    def run_query(self, name: str, ds: dt.date, **params: Any) -> pa.Table:
        """Run the query the SQL catalog calls ``name`` (``sql/queries/<name>.sql``) for ``ds``.

        Raises:
            pipelines.core.sql_catalog.SqlContractError: no such query.
        """
        return self.query_file(load_catalog().query(name).path, ds, **params)

    def run_model(self, model: SqlFile, ds: dt.date, **params: Any) -> int:
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
        self._wrote(model.name)
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
        other = set(pc.unique(rows.column(PARTITION_COLUMN)).to_pylist()) - {ds}
        if other:
            raise ValueError(f"{table}: rows for ds={ds} carry other ds values {sorted(other)[:3]}")
        loaded = self._load_partition(table, rows, ds)
        self._wrote(table)
        return loaded

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
        self._wrote(table)
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
            q = q.where(ds_equals(ds))
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


def check_file_columns(uri: str, names: list[str], columns: pa.Schema) -> None:
    if names != columns.names:
        raise ValueError(f"{uri}: columns {names}, expected {columns.names}")


def bigquery_integers(table: pa.Table) -> pa.Table:
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


def ds_equals(ds: dt.date) -> exp.Expression:
    return exp.EQ(
        this=exp.column(PARTITION_COLUMN), expression=exp.cast(exp.Literal.string(ds.isoformat()), "DATE")
    )


def replace_statements(table: exp.Table, select_sql: str, dialect: str, ds: dt.date | None) -> list[str]:
    """Statements that create ``table`` if needed and replace partition ``ds`` (or all rows)."""
    select = sqlglot.parse_one(select_sql, read=dialect)
    empty = exp.select("*").from_(select.subquery("src")).where(exp.false())
    create = exp.Create(this=table, kind="TABLE", exists=True, expression=empty)
    if ds is not None and dialect == "bigquery":
        create.set(
            "properties",
            exp.Properties(expressions=[exp.PartitionedByProperty(this=exp.column(PARTITION_COLUMN))]),
        )
    where = ds_equals(ds) if ds is not None else exp.true()
    delete = exp.delete(table, where=where)
    insert = exp.insert(exp.select("*").from_(select.subquery("src")), table)
    return [s.sql(dialect=dialect) for s in (create, delete, insert)]
