"""Import users' own data files (or tables already read) into the raw tables, in bounded memory.

Every file is read batch by batch (:mod:`pipelines.data.input_files`), its rows checked and spilled by
``ds`` to a scratch folder (:mod:`pipelines.data.spill`); once every file passed, each ``ds`` partition is
loaded on its own, replacing that partition. Peak memory is bounded by a batch and by one day's rows,
not by the file. Rows whose timestamps are not plausible (:mod:`pipelines.data.plausible`) are left out
and counted as ``out_of_range``; a file that fails its checks loads nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.settings import QualityConfig
from pipelines.core.warehouse import Warehouse
from pipelines.data.input_files import (
    DS_SOURCE,
    UTC_TIMESTAMP,
    InputFileError,
    existing_file,
    iter_table_file,
)
from pipelines.data.plausible import OUT_OF_RANGE, plausible_days, time_bounds
from pipelines.data.spill import DaySpill

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """Rows loaded per raw table, and rows left out per table and reason."""

    loaded: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"loaded": {...}, "rejected": {table: {reason: rows}}}``."""
        return {"loaded": dict(self.loaded), "rejected": {t: dict(r) for t, r in self.rejected.items()}}


def load_batches(
    warehouse: Warehouse,
    sources: Mapping[str, Iterable[tuple[int, pa.Table]]],
    origins: Mapping[str, str],
    quality: QualityConfig | None = None,
    now: dt.datetime | None = None,
    allow_empty: bool = False,
    scratch_dir: str | Path | None = None,
) -> ImportReport:
    """Check every raw table's batches, spill them by ``ds``, then load one partition at a time.

    Args:
        warehouse: where the raw tables are.
        sources: per raw table, ``(first_row, rows)`` batches in the raw schema with ``ds``.
        origins: per raw table, the file or folder it came from (for messages).
        quality: the plausible range of timestamps; defaults to :class:`QualityConfig`'s.
        now: the reference time of that range; defaults to the wall clock.
        allow_empty: accept a table without rows.
        scratch_dir: where the spilled batches go (a temporary folder inside it); defaults to the
            system's temporary folder.

    Returns:
        Rows loaded and rows left out per table (each loaded partition replaced its previous rows).

    Raises:
        InputFileError: a table has no rows (and ``allow_empty`` is off), or a batch failed its checks;
            nothing is loaded then.
    """
    quality = quality or QualityConfig()
    now = now or dt.datetime.now(dt.UTC)
    earliest, latest = time_bounds(quality, now)
    report = ImportReport()
    with tempfile.TemporaryDirectory(prefix="nightfeed-import-", dir=scratch_dir) as scratch:
        spills: dict[str, DaySpill] = {}
        for table, batches in sources.items():
            spill = spills[table] = DaySpill(Path(scratch) / table)
            rejected = report.rejected[table] = {}
            with spill:
                for first, rows in batches:
                    rows = _drop_out_of_range(rows, table, origins[table], first, earliest, latest, rejected)
                    spill.write(rows)
            if spill.rows_written == 0 and not rejected and not allow_empty:
                raise InputFileError(f"{origins[table]}: no rows (only a header)", hint=_EMPTY_HINT)
        events = spills.get("raw_events")
        if events is not None and events.day_counts:
            _drop_cut_off_days(events, quality, now, report.rejected["raw_events"], origins["raw_events"])
        pa.default_memory_pool().release_unused()  # the reading buffers, before the warehouse takes memory
        for table, spill in spills.items():
            report.loaded[table] = 0
            for day in spill.days():
                report.loaded[table] += warehouse.load_raw(table, spill.read_day(day), day)
            log.info(
                "imported %d rows into %s (rejected %s)", report.loaded[table], table, report.rejected[table]
            )
    return report


_EMPTY_HINT = "check that the file is the right one; pass --allow-empty to load an empty table on purpose"


def _drop_out_of_range(
    rows: pa.Table,
    table: str,
    origin: str,
    first: int,
    earliest: dt.datetime,
    latest: dt.datetime,
    rejected: dict[str, int],
) -> pa.Table:
    ts = rows.column(DS_SOURCE[table])
    keep = pc.and_(
        pc.greater_equal(ts, pa.scalar(earliest, UTC_TIMESTAMP)),
        pc.less_equal(ts, pa.scalar(latest, UTC_TIMESTAMP)),
    )
    kept = rows.filter(keep)
    dropped = rows.num_rows - kept.num_rows
    if dropped:
        at = int(np.flatnonzero(~keep.to_numpy(zero_copy_only=False))[0])
        if not rejected:
            log.warning(
                "%s: row %d is out_of_range: %s %s is not between %s and %s (quality.max_past_years, "
                "max_future_skew_minutes); such rows are left out",
                origin,
                first + at,
                DS_SOURCE[table],
                ts[at].as_py(),
                earliest.isoformat(),
                latest.isoformat(),
            )
        rejected[OUT_OF_RANGE] = rejected.get(OUT_OF_RANGE, 0) + dropped
    return kept


def _drop_cut_off_days(
    events: DaySpill, quality: QualityConfig, now: dt.datetime, rejected: dict[str, int], origin: str
) -> None:
    span = plausible_days(events.day_counts, quality, now)
    cut = [d for d in events.days() if span is None or not span[0] <= d <= span[1]]
    if not cut:
        return
    dropped = events.drop_days(cut)
    rejected[OUT_OF_RANGE] = rejected.get(OUT_OF_RANGE, 0) + dropped
    log.warning(
        "%s: %d events on %d days (first %s) are cut off from the bulk of the events (%s .. %s) by more "
        "than quality.max_gap_days=%d days without events: out_of_range, left out",
        origin,
        dropped,
        len(cut),
        cut[0],
        span[0] if span else "-",
        span[1] if span else "-",
        quality.max_gap_days,
    )


def load_tables(
    warehouse: Warehouse,
    tables: Mapping[str, pa.Table],
    origin: str,
    quality: QualityConfig | None = None,
    now: dt.datetime | None = None,
    scratch_dir: str | Path | None = None,
) -> ImportReport:
    """Load raw tables already in memory (with ``ds``) like files: checked, by ``ds`` partition.

    Raises:
        InputFileError: a table has no rows (``origin`` is named).
    """
    sources = {table: [(1, rows)] for table, rows in tables.items()}
    origins = dict.fromkeys(tables, origin)
    return load_batches(warehouse, sources, origins, quality, now, scratch_dir=scratch_dir)


def import_files(
    warehouse: Warehouse,
    events: str | Path,
    items: str | Path,
    users: str | Path,
    quality: QualityConfig | None = None,
    now: dt.datetime | None = None,
    allow_empty: bool = False,
    scratch_dir: str | Path | None = None,
) -> ImportReport:
    """Check and load a user's own events, items and users files (CSV or Parquet), in bounded memory.

    Args:
        warehouse: where the raw tables are.
        events: the events file.
        items: the items (posts) file.
        users: the users file.
        quality: the plausible range of timestamps; defaults to :class:`QualityConfig`'s.
        now: the reference time of that range; defaults to the wall clock.
        allow_empty: accept a file with a header and no rows.
        scratch_dir: where the files' rows are spilled by ``ds`` before loading.

    Returns:
        Rows loaded per table and rows left out (``out_of_range``).

    Raises:
        InputFileError: any file cannot be read or does not match its schema; nothing is loaded then.
    """
    paths = {"raw_events": events, "raw_items": items, "raw_users": users}
    paths = {table: existing_file(path) for table, path in paths.items()}
    sources = {table: iter_table_file(path, table) for table, path in paths.items()}
    origins = {table: str(path) for table, path in paths.items()}
    return load_batches(warehouse, sources, origins, quality, now, allow_empty, scratch_dir)
