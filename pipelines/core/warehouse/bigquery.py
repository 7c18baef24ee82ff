"""Google BigQuery through the official client: partitions replaced in one multi-statement transaction,
Parquet load jobs for rows and published lake files."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from pipelines.core.warehouse.base import Warehouse, check_file_columns, replace_statements

if TYPE_CHECKING:
    from pipelines.core.lake import Lake


def bigquery_client(
    project: str, location: str, api_endpoint: str | None = None, credentials: Any | None = None
) -> Any:
    """A BigQuery client with ``credentials`` (None: application-default), or for an emulator at
    ``api_endpoint`` (anonymous)."""
    from google.cloud import bigquery

    kwargs: dict[str, Any] = {"project": project, "location": location, "credentials": credentials}
    if api_endpoint:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
        kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
    return bigquery.Client(**kwargs)


class BigQueryWarehouse(Warehouse):
    """Google BigQuery through the official client; tables live in ``project.dataset``."""

    dialect = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        location: str = "US",
        api_endpoint: str | None = None,
        credentials: Any | None = None,
    ) -> None:
        from google.cloud import bigquery

        self._bq = bigquery
        self.client = bigquery_client(project, location, api_endpoint, credentials)
        self.project, self.dataset = project, dataset
        self.client.create_dataset(f"{project}.{dataset}", exists_ok=True)

    def table_ref(self, name: str) -> str:
        return f"`{self.project}.{self.dataset}.{name}`"

    def lineage_name(self, table: str) -> tuple[str, str]:
        return "bigquery", f"{self.project}.{self.dataset}.{table}"

    def _query_arrow(self, sql: str) -> pa.Table:
        return self.client.query(sql).result().to_arrow(create_bqstorage_client=False)

    def _table(self, name: str) -> exp.Table:
        # Quoted part by part: project ids may contain dashes, which are only valid unquoted in some
        # positions of a BigQuery table path.
        return exp.table_(name, db=self.dataset, catalog=self.project, quoted=True)

    def _replace(self, table: str, select_sql: str, ds: dt.date | None) -> int:
        create, delete, insert = replace_statements(self._table(table), select_sql, "bigquery", ds)
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
                    check_file_columns(lake.uri(path), pq.read_schema(data).names, columns)
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
