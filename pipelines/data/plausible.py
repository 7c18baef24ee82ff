"""The plausible range of raw timestamps; rows outside it are ``out_of_range``.

Relative to a reference time (now for an import, the last day for a history build): a timestamp more
than ``quality.max_past_years`` before it, or more than ``quality.max_future_skew_minutes`` after it,
is out of range. Relative to the data's own span: event days cut off from the bulk of the events (the
run of days without a gap longer than ``quality.max_gap_days`` that holds the most events) are out of
range too, so one epoch-0 or year-9999 event cannot stretch a history build over decades.

Reads ``raw_events`` (its rows per day) for :func:`first_plausible_day`; writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

from pipelines.core.errors import UserError
from pipelines.core.schema import RAW_EVENT_DAYS
from pipelines.core.settings import QualityConfig
from pipelines.core.warehouse import Warehouse

log = logging.getLogger(__name__)

OUT_OF_RANGE = "out_of_range"


def time_bounds(quality: QualityConfig, reference: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The earliest and latest plausible timestamps around ``reference`` (both included)."""
    years_back = reference.year - quality.max_past_years
    try:
        earliest = reference.replace(year=years_back)
    except ValueError:  # 29 February
        earliest = reference.replace(year=years_back, day=28)
    return earliest, reference + dt.timedelta(minutes=quality.max_future_skew_minutes)


def plausible_days(
    day_counts: Mapping[dt.date, int], quality: QualityConfig, reference: dt.datetime
) -> tuple[dt.date, dt.date] | None:
    """The first and last day of the bulk of the events, from the number of events on each day.

    Days outside :func:`time_bounds` are left out first; the rest are cut into runs wherever more than
    ``quality.max_gap_days`` days without events separate two days, and the run holding the most events
    wins (the later one on a tie).

    Returns:
        ``(first, last)``, or None when no day with events is in range.
    """
    earliest, latest = time_bounds(quality, reference)
    days = sorted(d for d, n in day_counts.items() if n > 0 and earliest.date() <= d <= latest.date())
    if not days:
        return None
    runs: list[list[dt.date]] = [[days[0]]]
    for day in days[1:]:
        if (day - runs[-1][-1]).days - 1 > quality.max_gap_days:
            runs.append([])
        runs[-1].append(day)
    best = max(reversed(runs), key=lambda run: sum(day_counts[d] for d in run))
    return best[0], best[-1]


def first_plausible_day(warehouse: Warehouse, end: dt.date, quality: QualityConfig) -> dt.date:
    """Where a history build ending at ``end`` starts: the first day of the bulk of the raw events up to
    ``end`` (the reference time is the end of ``end``, so the answer does not depend on the clock).

    Raises:
        UserError: no raw events up to ``end`` are plausible (none loaded, say).
    """
    counts = (
        warehouse.run_query(RAW_EVENT_DAYS, end).to_pylist() if warehouse.table_exists("raw_events") else []
    )
    end_of_day = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    span = plausible_days({row["ds"]: row["n_rows"] for row in counts}, quality, end_of_day)
    if span is None:
        raise UserError(
            f"no plausible raw events up to {end}",
            hint="load data first: python -m pipelines world --end-date DATE, or python -m pipelines import",
        )
    skipped = [row["ds"] for row in counts if row["ds"] < span[0]]
    if skipped:
        log.warning(
            "history starts at %s, the first plausible day: %d earlier days of raw events (first %s) are "
            "out_of_range (quality.max_past_years, quality.max_gap_days)",
            span[0],
            len(skipped),
            skipped[0],
        )
    return span[0]
