"""The embedded warehouse: a DuckDB file that runs the BigQuery-dialect SQL transpiled by sqlglot."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from pipelines.core.warehouse.base import Warehouse, bigquery_integers, check_file_columns, replace_statements

if TYPE_CHECKING:
    from pipelines.core.lake import Lake

log = logging.getLogger(__name__)

CHECKPOINT_ROWS = 1_000_000  # raw rows loaded between two checkpoints
CACHE_TRIM_LIMIT = "64MB"


class DuckDBWarehouse(Warehouse):
    """The embedded warehouse: a DuckDB file, one writer process at a time."""

    dialect = "duckdb"

    def __init__(self, path: str | Path, read_only: bool = False, lock_timeout_s: float = 600.0) -> None:
        import duckdb

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        next_log = started
        while True:
            try:
                self.con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                # Another Airflow task holds the file; DuckDB allows one writer process.
                waited = time.monotonic() - started
                if "lock" not in str(exc).lower() or waited > lock_timeout_s:
                    raise
                if time.monotonic() >= next_log:
                    log.info(
                        "waiting for the warehouse %s, held by another process (%.0f s of %.0f s): %s",
                        self.path,
                        waited,
                        lock_timeout_s,
                        exc,
                    )
                    next_log += 30.0
                time.sleep(1.0)
        self._rows_since_checkpoint = 0
        # BigQuery evaluates timestamps in UTC; DuckDB would use the machine's zone.
        self._run("set TimeZone = 'UTC'")
        self._run("set preserve_insertion_order = true")

    def _run(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        # DuckDB wants every result drained before the connection runs anything else.
        return self.con.execute(sql, params or []).fetchall()

    def table_ref(self, name: str) -> str:
        return f"`{name}`"

    def lineage_name(self, table: str) -> tuple[str, str]:
        return f"duckdb://{self.path.resolve()}", f"main.{table}"

    def _query_arrow(self, sql: str) -> pa.Table:
        return bigquery_integers(self.con.sql(sql).to_arrow_table())

    def _replace(self, table: str, select_sql: str, ds: dt.date | None) -> int:
        tbl = exp.to_table(table)
        create, *statements = replace_statements(tbl, select_sql, "duckdb", ds)
        # Outside the transaction: in DuckDB 2.0, a CREATE TABLE IF NOT EXISTS that finds a table made
        # earlier on this connection, run inside the transaction, hides the rows it then inserts from
        # every later scan on the connection (count(*) still counts them).
        self._run(create)
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
            loaded = self._replace(table, "select * from _nightfeed_load", ds)
        finally:
            self.con.unregister("_nightfeed_load")
        self._rows_since_checkpoint += rows.num_rows
        if self._rows_since_checkpoint >= CHECKPOINT_ROWS:
            self._checkpoint_bulk_load()
        return loaded

    def _checkpoint_bulk_load(self) -> None:
        """Keep a long series of raw loads (an import) in bounded memory.

        A checkpoint after many loads merges every new row group at once and takes memory in proportion to
        all of them (about 640 MB after 10M events), so one runs every ``CHECKPOINT_ROWS`` rows. DuckDB
        also keeps every block it wrote cached up to its memory limit (80% of RAM by default); lowering
        the limit for a moment drops those blocks, which are on disk after the checkpoint.
        """
        import duckdb

        self._run("checkpoint")
        self._rows_since_checkpoint = 0
        limit = self._run("select current_setting('memory_limit')")[0][0]
        try:
            self._run(f"set memory_limit = '{CACHE_TRIM_LIMIT}'")
        except duckdb.Error as exc:  # blocks in use cannot be dropped; the cache just stays
            log.debug("DuckDB cache not trimmed: %s", exc)
        finally:
            self._run(f"set memory_limit = '{limit}'")

    def _load_files(
        self, table: str, lake: Lake, files: Sequence[str], ds: dt.date, columns: pa.Schema
    ) -> int:
        source = "_nightfeed_load"
        create, delete, insert = replace_statements(
            exp.to_table(table), self._from_with_ds(exp.to_table(source), ds), "duckdb", ds
        )
        self._run("begin transaction")
        try:
            for i, path in enumerate(files):
                rows = lake.read_parquet(path)
                check_file_columns(lake.uri(path), rows.schema.names, columns)
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
