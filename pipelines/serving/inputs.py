"""The nightly inputs snapshot: what serving needs from the warehouse, copied into ``inputs/ds=…/`` so that
shard workers read only the lake (users with features, the eligible catalog, seen pairs, profiles,
interactions).

The inputs keyed by user are written per shard (``users/shard=NNN.parquet``, by the shard rule of
:mod:`pipelines.serving.sharding`), so a shard task reads its own users, seen pairs, profiles and
histories and its load grows with its size, not with the day's. The catalog is one file.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.errors import PermanentError, UserError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import SERVING_INPUTS
from pipelines.core.settings import Settings
from pipelines.core.warehouse import Warehouse
from pipelines.serving.sharding import shard_of

log = logging.getLogger(__name__)

# The inputs partitioned by the shard of their ``user_id``; the others are written whole.
SHARDED_INPUTS: tuple[str, ...] = ("users", "seen", "profiles", "interactions")


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


def shard_parts(table: pa.Table, num_shards: int) -> list[pa.Table]:
    """``table`` split by the shard of its ``user_id``; each part keeps the rows' order."""
    shards = shard_of(table.column("user_id"), num_shards)
    order = np.argsort(shards, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(shards, minlength=num_shards))])
    return [table.take(pa.array(order[bounds[k] : bounds[k + 1]])) for k in range(num_shards)]


def export_inputs(warehouse: Warehouse, lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Snapshot the serving inputs of ``ds`` from the warehouse into the lake, the inputs keyed by user
    in ``candidates.num_shards`` parts.

    Returns:
        Rows per input, the number of shards and the dataset URI.

    Raises:
        EmptyInputsError: no users, or no eligible posts, on ``ds`` (nothing is published).
    """
    num_shards = settings.candidates.num_shards
    tables = query_inputs(warehouse, ds, settings)
    dataset = LakePaths.inputs(ds)
    staging = lake.begin_publish(dataset)
    files = []
    for name, table in tables.items():
        if name in SHARDED_INPUTS:
            for shard, part in enumerate(shard_parts(table, num_shards)):
                files.append(LakePaths.input_file(name, shard))
                lake.write_parquet(f"{staging}/{files[-1]}", part)
        else:
            files.append(LakePaths.input_file(name))
            lake.write_parquet(f"{staging}/{files[-1]}", table)
    rows = {name: table.num_rows for name, table in tables.items()}
    lake.publish(dataset, staging, files, metadata={"rows": rows, "num_shards": num_shards})
    return {"dataset": lake.uri(dataset), "rows": rows, "num_shards": num_shards}


def _input_files(lake: Lake, ds: dt.date, name: str) -> tuple[list[str], int | None]:
    """The published files of input ``name`` of ``ds`` (one per shard, in shard order, for a partitioned
    input) and the number of shards the inputs were written in (None: one file)."""
    manifest = lake.read_manifest(LakePaths.inputs(ds))
    files = lake.manifest_files(LakePaths.inputs(ds))
    whole = [path for path in files if path.endswith("/" + LakePaths.input_file(name))]
    if whole:
        return whole, None
    parts = sorted(path for path in files if f"/{name}/" in path)
    if not parts:
        raise FileNotFoundError(f"{lake.uri(LakePaths.inputs(ds))} has no input {name!r}")
    return parts, int(manifest["metadata"]["num_shards"])


def read_input(lake: Lake, ds: dt.date, name: str, columns: list[str] | None = None) -> pa.Table:
    """One whole published input table of ``ds`` (``users``, ``items``, ``seen``, ``profiles`` or
    ``interactions``), all columns or ``columns``; a partitioned one comes shard after shard, each part
    in the query's order.

    Raises:
        FileNotFoundError: the inputs of ``ds`` have no such table.
    """
    files, _ = _input_files(lake, ds, name)
    return pa.concat_tables(lake.read_parquet(path, columns) for path in files)


def read_shard_input(lake: Lake, ds: dt.date, name: str, shard: int, num_shards: int) -> pa.Table:
    """The rows of input ``name`` of ``ds`` whose ``user_id`` belongs to ``shard`` of ``num_shards``.

    Reads that shard's part alone when the inputs were written in ``num_shards`` parts; otherwise
    (another shard count, a run with other parameters) reads the whole table and keeps the shard's rows.

    Raises:
        FileNotFoundError: the inputs of ``ds`` have no such table.
    """
    files, written_in = _input_files(lake, ds, name)
    if written_in == num_shards:
        return lake.read_parquet(files[shard])
    log.warning(
        "ds=%s: input %s was written in %s, not in %d parts: shard %d reads it whole",
        ds,
        name,
        f"{written_in} parts" if written_in else "one file",
        num_shards,
        shard,
    )
    table = pa.concat_tables(lake.read_parquet(path) for path in files)
    return table.filter(pa.array(shard_of(table.column("user_id"), num_shards) == shard))
