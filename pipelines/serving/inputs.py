"""The nightly inputs snapshot: what serving needs from the warehouse, copied into ``inputs/ds=…/`` so that
shard workers read only the lake (users with features, the eligible catalog, seen pairs, profiles)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from pipelines.core.errors import PermanentError, UserError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import SERVING_INPUTS
from pipelines.core.settings import Settings
from pipelines.core.warehouse import Warehouse


class EmptyInputsError(PermanentError):
    """The day has no users or no eligible posts: nothing meaningful can be published."""


class MissingFeaturesError(UserError, EmptyInputsError):
    """The feature tables have no partition for the day: the features step has not run for it."""


FEATURE_TABLES = ("user_features", "item_features")


def require_features(warehouse: Warehouse, ds: dt.date) -> None:
    """Refuse to read the features of ``ds`` before they are built.

    Raises:
        MissingFeaturesError: a feature table has no partition for ``ds`` (the message says what to run).
    """
    for table in FEATURE_TABLES:
        if ds not in warehouse.partitions(table):
            raise MissingFeaturesError(
                f"ds={ds}: {table} has no partition for {ds}: the features of that day are not built",
                hint=f"run the features DAG for {ds}, or `python -m pipelines features --ds {ds}` "
                f"(`features --end {ds}` for the whole history)",
            )


def query_inputs(warehouse: Warehouse, ds: dt.date, settings: Settings) -> dict[str, pa.Table]:
    """The serving inputs of ``ds`` from the warehouse: what a night serves from (published or replayed).

    Raises:
        MissingFeaturesError: the features of ``ds`` were never built.
        EmptyInputsError: no users, or no eligible posts, on ``ds``.
    """
    from pipelines.core.sql_params import sql_params

    require_features(warehouse, ds)

    params = {**sql_params(settings), "max_item_age_days": settings.candidates.max_item_age_days or 0}
    tables = {}
    for name, query in SERVING_INPUTS.items():
        tables[name] = warehouse.run_query(query, ds, **params)
        if name in ("users", "items") and tables[name].num_rows == 0:
            raise EmptyInputsError(f"ds={ds}: no {name} to serve (sql/queries/{query}.sql returned no rows)")
    return tables


def export_inputs(warehouse: Warehouse, lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Snapshot the serving inputs of ``ds`` from the warehouse into the lake.

    Returns:
        Rows per input file and the dataset URI.

    Raises:
        EmptyInputsError: no users, or no eligible posts, on ``ds`` (nothing is published).
    """
    tables = query_inputs(warehouse, ds, settings)
    dataset = LakePaths.inputs(ds)
    staging = lake.begin_publish(dataset)
    for name, table in tables.items():
        lake.write_parquet(f"{staging}/{name}.parquet", table)
    rows = {name: table.num_rows for name, table in tables.items()}
    lake.publish(dataset, staging, [f"{name}.parquet" for name in tables], metadata={"rows": rows})
    return {"dataset": lake.uri(dataset), "rows": rows}


def read_input(lake: Lake, ds: dt.date, name: str) -> pa.Table:
    """One published input table of ``ds`` (``users``, ``items``, ``seen`` or ``profiles``)."""
    wanted = f"{name}.parquet"
    for path in lake.manifest_files(LakePaths.inputs(ds)):
        if path.endswith("/" + wanted):
            return lake.read_parquet(path)
    raise FileNotFoundError(f"{lake.uri(LakePaths.inputs(ds))} has no {wanted}")
