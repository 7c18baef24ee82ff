"""Arrow table helpers every stage shares: input checks that name the offending column or row, and
hash lookups of keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_table(data: Any, what: str) -> pa.Table:
    """``data`` as an Arrow table (a pandas DataFrame is converted without its index).

    Raises:
        TypeError: ``data`` is neither an Arrow table nor a pandas DataFrame.
    """
    if isinstance(data, pa.Table):
        return data
    if type(data).__name__ == "DataFrame" and hasattr(data, "to_numpy"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(f"{what} must be a pyarrow Table or pandas DataFrame, got {type(data).__name__}")


def require_columns(table: pa.Table, columns: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming the columns of ``columns`` that ``table`` lacks.

    Raises:
        TypeError: ``table`` is not an Arrow table.
        ValueError: a column is missing.
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"{what} must be a pyarrow Table, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {table.column_names}")


def first_true(mask: pa.ChunkedArray | pa.Array | np.ndarray) -> int | None:
    """Row number of the first true value of ``mask`` (nulls count as false), None when there is none."""
    if not isinstance(mask, np.ndarray):
        mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(rows[0]) if len(rows) else None


def first_null(table: pa.Table, column: str) -> int | None:
    """Row number of the first null of ``column``, None when it has none."""
    values = table.column(column)
    return first_true(pc.is_null(values)) if values.null_count else None


def row_numbers(
    values: pa.Array | pa.ChunkedArray, keys: pa.Array | pa.ChunkedArray, unique: bool | None = None
) -> np.ndarray:
    """The row of each value in ``keys``, -1 when absent; the last row when a key repeats (like a dict).

    One hash lookup per value in Arrow, whatever the size of ``keys``. ``unique`` says whether the keys
    are known to be distinct (None: count them).
    """
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    last = len(keys) - 1
    if unique is None:
        unique = pc.count_distinct(keys, mode="all").as_py() == len(keys)
    if not unique:
        found = pc.index_in(values, value_set=keys.take(pa.array(np.arange(last, -1, -1))))
        return np.where(found.is_null(), -1, last - found.fill_null(0)).astype(np.int64)
    return pc.fill_null(pc.index_in(values, value_set=keys), -1).to_numpy().astype(np.int64)
