"""The warehouse: BigQuery in production, DuckDB embedded, behind one interface.

SQL is written once, in BigQuery dialect, in ``sql/**.sql``: one ``select`` per file, templated with
Jinja on ``ds`` (``{{ ds }}``), table references (``{{ ref('stg_events') }}``) and typed parameters
(``{{ params.window_days }}``). The DuckDB backend transpiles it with sqlglot. Materialisation (create,
replace a ``ds`` partition whole, load rows) is built here from sqlglot expressions, never from
string formatting, so a rerun of a day replaces that day and nothing else.
"""

from typing import Any

from pipelines.core.settings import Settings
from pipelines.core.warehouse.base import SqlError, Warehouse
from pipelines.core.warehouse.bigquery import BigQueryWarehouse, bigquery_schema
from pipelines.core.warehouse.duckdb import DuckDBWarehouse

__all__ = [
    "BigQueryWarehouse",
    "DuckDBWarehouse",
    "SqlError",
    "Warehouse",
    "bigquery_schema",
    "open_warehouse",
]


def open_warehouse(settings: Settings, read_only: bool = False, credentials: Any | None = None) -> Warehouse:
    """The warehouse the settings name; BigQuery with ``credentials`` (None: application-default)."""
    if settings.warehouse == "bigquery":
        assert settings.bigquery_project  # checked by Settings
        return BigQueryWarehouse(
            settings.bigquery_project,
            settings.bigquery_dataset,
            settings.bigquery_location,
            settings.bigquery_api_endpoint,
            credentials,
        )
    return DuckDBWarehouse(settings.duckdb_file, read_only=read_only)
