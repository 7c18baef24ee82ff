"""Raw user and post tables -> the padded numpy arrays the towers take, plus the per-user cap on training
examples.

Reads Arrow tables (or DataFrames) with the user tower's and the item tower's input columns; writes
nothing. Bad input raises ``ValueError`` naming the column or row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.core.tables import as_table, first_true, require_columns

USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "history",
    "selected_tags",
    "account_age_days",
    "activity_lookback",
)
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "summary",
    "tags",
    "source",
    "author",
    "post_type",
    "content_type",
    "language",
    "item_age_days",
)
CATEGORICAL_ITEM_COLUMNS: tuple[str, ...] = ("source", "author", "post_type", "content_type", "language")
EMBED_BATCH = 4096


def user_features(table: pa.Table | pd.DataFrame, config: TwoTowerConfig, what: str = "users") -> dict:
    """Raw user columns as numpy arrays the user tower takes (lists padded with ``""``).

    Raises:
        ValueError: a column is missing, or a row has a null id or a null/non-finite number.
    """
    table = as_table(table, what)
    require_columns(table, USER_COLUMNS, what)
    return {
        "user_id": string_column(table, "user_id", what),
        "history": _padded(table, "history", config.history_length, what),
        "selected_tags": _padded(table, "selected_tags", config.max_tags, what),
        "account_age_days": _floats(table, "account_age_days", what),
        "activity_lookback": _floats(table, "activity_lookback", what),
    }


def item_features(table: pa.Table | pd.DataFrame, config: TwoTowerConfig, what: str = "items") -> dict:
    """Raw item columns as numpy arrays the item tower takes (tags padded with ``""``).

    Raises:
        ValueError: a column is missing, or a row has a null id or a null/non-finite age.
    """
    table = as_table(table, what)
    require_columns(table, ITEM_COLUMNS, what)
    out: dict[str, np.ndarray] = {"item_id": string_column(table, "item_id", what)}
    for name in ("title", "summary", *CATEGORICAL_ITEM_COLUMNS):
        out[name] = string_column(table, name, what, allow_null=True)
    out["tags"] = _padded(table, "tags", config.max_tags, what)
    out["item_age_days"] = _floats(table, "item_age_days", what)
    return out


def string_column(table: pa.Table, name: str, what: str, allow_null: bool = False) -> np.ndarray:
    """A string column as a numpy object array; nulls become ``""`` when ``allow_null``.

    Args:
        table: the table.
        name: the column.
        what: the table's name in error messages.
        allow_null: whether nulls are allowed.

    Raises:
        ValueError: the column is not a string column, or holds a null that is not allowed.
    """
    column = table.column(name)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        raise ValueError(f"{what}.{name} must be a string column, got {column.type}")
    if column.null_count:
        if not allow_null:
            raise ValueError(f"{what} row {first_true(pc.is_null(column))}: {name} is null")
        column = column.fill_null("")
    return column.to_numpy(zero_copy_only=False).astype(object)


def _floats(table: pa.Table, name: str, what: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise ValueError(f"{what} row {first_true(pc.is_null(column))}: {name} is null")
    try:
        values = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{what}.{name} must be numeric, got {column.type}") from exc
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{what} row {int(np.flatnonzero(bad)[0])}: {name} is not finite ({values[bad][0]})")
    return values.astype(np.float32)


def _padded(table: pa.Table, name: str, width: int, what: str) -> np.ndarray:
    """A list<string> column as an (n, width) object array: first ``width`` values, ``""`` padding."""
    column = table.column(name)
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise ValueError(f"{what}.{name} must be a list of strings, got {column.type}")
    if pa.types.is_null(column.type.value_type):  # e.g. a column of empty lists built from Python
        column = column.cast(pa.list_(pa.string()))
    if not pa.types.is_string(column.type.value_type) and not pa.types.is_large_string(
        column.type.value_type
    ):
        raise ValueError(f"{what}.{name} must be a list of strings, got {column.type}")
    lists = pc.list_slice(column.combine_chunks(), 0, width)
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists).fill_null("").to_numpy(zero_copy_only=False)
    out = np.full((table.num_rows, width), "", dtype=object)
    rows = np.repeat(np.arange(table.num_rows), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(values)) - np.repeat(starts, lengths)
    out[rows, cols] = values
    return out


def cap_examples_per_user(examples: pa.Table, max_per_user: int) -> pa.Table:
    """Keep each user's ``max_per_user`` most recent examples, so heavy users do not dominate the loss.

    Returns:
        The kept rows, ordered by user, then time (most recent first), then post: the same table
        whatever order the warehouse returned the rows in, so training does not depend on it.
    """
    if max_per_user < 1:
        raise ValueError(f"max_per_user must be >= 1, got {max_per_user}")
    ordered = examples.sort_by(
        [("user_id", "ascending"), ("event_ts", "descending"), ("item_id", "ascending")]
    )
    users = ordered.column("user_id").to_numpy(zero_copy_only=False)
    first = np.r_[True, users[1:] != users[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    rank = np.arange(len(users)) - group_start
    return ordered.filter(pa.array(rank < max_per_user))
