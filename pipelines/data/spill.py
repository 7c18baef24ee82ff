"""Rows of one raw table spilled to local Parquet files by ``ds``, so a large import is loaded one day at a
time without holding the whole file.

Writes ``<folder>/ds=<day>/part-<n>.parquet``; only a few files are open at once (a day seen again after
its file was closed gets a new part). Reading a day gives its rows back in the order they were written.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import OrderedDict
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.schema import PARTITION_COLUMN

MAX_OPEN_FILES = 32


class DaySpill:
    """A scratch folder of one table's rows by ``ds``; use it as a context manager while writing."""

    def __init__(self, folder: Path, max_open_files: int = MAX_OPEN_FILES) -> None:
        self.folder = folder
        self.max_open_files = max_open_files
        self.day_counts: dict[dt.date, int] = {}
        self.rows_written = 0
        self._files: dict[dt.date, list[Path]] = {}
        self._open: OrderedDict[dt.date, pq.ParquetWriter] = OrderedDict()

    def __enter__(self) -> DaySpill:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, rows: pa.Table) -> None:
        """Append ``rows`` (with a ``ds`` column without nulls) to the files of their days."""
        if rows.num_rows == 0:
            return
        low, high = pc.min_max(rows.column(PARTITION_COLUMN)).values()
        if low != high:
            rows = rows.sort_by(PARTITION_COLUMN)
        days = rows.column(PARTITION_COLUMN).to_numpy()
        starts = [0, *(np.flatnonzero(days[1:] != days[:-1]) + 1).tolist()]
        ends = [*starts[1:], rows.num_rows]
        for start, end in zip(starts, ends, strict=True):
            day = days[start].item()
            self._writer(day, rows.schema).write_table(rows.slice(start, end - start))
            self.day_counts[day] = self.day_counts.get(day, 0) + end - start
        self.rows_written += rows.num_rows

    def _writer(self, day: dt.date, schema: pa.Schema) -> pq.ParquetWriter:
        writer = self._open.get(day)
        if writer is not None:
            self._open.move_to_end(day)
            return writer
        if len(self._open) >= self.max_open_files:
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        parts = self._files.setdefault(day, [])
        path = self.folder / f"{PARTITION_COLUMN}={day.isoformat()}" / f"part-{len(parts):05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        parts.append(path)
        writer = self._open[day] = pq.ParquetWriter(path, schema)
        return writer

    def close(self) -> None:
        """Close every open file (idempotent)."""
        while self._open:
            self._open.popitem()[1].close()

    def days(self) -> list[dt.date]:
        """The days with rows, ascending."""
        return sorted(self._files)

    def read_day(self, day: dt.date) -> pa.Table:
        """Every row written for ``day``."""
        return pa.concat_tables(pq.read_table(path) for path in self._files[day])

    def drop_days(self, days: list[dt.date]) -> int:
        """Forget ``days`` and delete their files; returns the rows dropped."""
        dropped = 0
        for day in days:
            dropped += self.day_counts.pop(day)
            self._files.pop(day)
            shutil.rmtree(self.folder / f"{PARTITION_COLUMN}={day.isoformat()}")
        return dropped
