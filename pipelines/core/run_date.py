"""The run date ``ds``: a :class:`datetime.date`, checked once where it enters (CLI, DAG runtime, tests).

Every stage below the seam takes a ``datetime.date``; ``str(ds)`` is its ``YYYY-MM-DD`` form, which is
how it appears in lake paths, SQL and file contents.
"""

from __future__ import annotations

import datetime as dt
import re

from pipelines.core.errors import PermanentError

_DS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadRunDate(PermanentError, ValueError):
    """A run date that is not a calendar date written ``YYYY-MM-DD``."""


def parse_run_date(value: str | dt.date, origin: str = "ds") -> dt.date:
    """``value`` as a date.

    Args:
        value: a date, or a string ``YYYY-MM-DD``.
        origin: what the value is called where it came from (a flag, a param), for the error message.

    Raises:
        BadRunDate: ``value`` is not a real calendar date in that form.
    """
    if isinstance(value, dt.datetime):
        raise BadRunDate(f"{origin} must be a date like 2026-11-22, got the timestamp {value.isoformat()}")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DS_RE.match(value):
        raise BadRunDate(f"{origin} must be a date like 2026-11-22, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise BadRunDate(f"{origin} {value!r} is not a calendar date") from exc


def date_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included (empty when ``last`` is earlier)."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def end_of_day(ds: dt.date) -> dt.datetime:
    """The first instant after ``ds`` (midnight UTC): data of ``ds`` is everything before it."""
    return dt.datetime.combine(ds + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
