"""Freshness of what users get: how many days the newest published candidates and digests lag behind a
run date, and a check that fails loudly when either lags more than ``freshness.max_age_days``.

Reads only lake manifests, so a dataset still being written or left half-written by a killed run does not
count as published. Writes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.run_date import BadRunDate, parse_run_date
from pipelines.core.settings import FreshnessConfig

PUBLISHED_OUTPUTS = ("candidates", "digests")
"""The datasets users are served from: the nightly lists and the digest e-mails."""


class StaleOutputs(PermanentError):
    """The newest published candidates or digests are older than the freshness check allows."""


def newest_published_ds(lake: Lake, name: str) -> dt.date | None:
    """The newest ``ds`` whose ``name`` dataset (``candidates``, ``digests``, …) is published, or None."""
    for entry in sorted(lake.ls(name), reverse=True):
        try:
            day = parse_run_date(entry.removeprefix("ds="))
        except BadRunDate:
            continue
        if lake.is_published(LakePaths.dataset(name, day)):
            return day
    return None


def check_freshness(lake: Lake, ds: dt.date, config: FreshnessConfig) -> dict[str, Any]:
    """Check that the newest published candidates and digests are at most ``config.max_age_days`` before ds.

    Args:
        lake: the lake the outputs are published in.
        ds: the day of the check (the freshness DAG's run date).
        config: the allowed age.

    Returns:
        ``{"ds", "max_age_days", "newest": {name: ds or None}, "age_days": {name: days or None}}``.

    Raises:
        StaleOutputs: an output is older than allowed or was never published (the message says which,
            for which day, and where it was looked for).
    """
    newest = {name: newest_published_ds(lake, name) for name in PUBLISHED_OUTPUTS}
    ages = {name: (ds - day).days if day else None for name, day in newest.items()}
    problems = []
    for name, day in newest.items():
        if day is None:
            problems.append(f"no {name} are published in {lake.uri(name)}")
        elif ages[name] > config.max_age_days:
            problems.append(
                f"the newest published {name} are for {day}, {ages[name]} days before {ds} "
                f"(freshness.max_age_days is {config.max_age_days})"
            )
    if problems:
        raise StaleOutputs("stale outputs: " + "; ".join(problems))
    return {
        "ds": ds.isoformat(),
        "max_age_days": config.max_age_days,
        "newest": {name: day.isoformat() for name, day in newest.items() if day},
        "age_days": ages,
    }
