"""Which past nights a training run replays, and how long the window after each night is.

A night ``T`` is scored on what users did in ``[T, T + window)``; the lists of that night are the ones the
nightly job would have published from the data of ``T - 1``. The test night's window ends on the run date,
so every engagement up to it counts; the validation nights lie before it, one window apart, and the
systems are chosen on them, never on the test night. The window is the shortest choice in which enough
users had something to find, so sparse data (a ratings log) gets a long one and a busy feed a short one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import PermanentError
from pipelines.core.model_settings import SelectionConfig
from pipelines.core.warehouse import Warehouse

TRUTH_QUERY = "evaluation/truth"
# Days of data a window must leave before its first validation night (models train on them).
MIN_DAYS_BEFORE = 7

log = logging.getLogger(__name__)


class NotEnoughHistory(PermanentError):
    """The data is too short to hold the validation and test nights."""


@dataclass(frozen=True)
class NightPlan:
    """The nights of one training run: ``validation`` (oldest first) and ``test``, and the window;
    ``ranker`` are earlier nights (oldest first) whose retrieval only trains rankers."""

    validation: tuple[dt.date, ...]
    test: dt.date
    window_days: int
    ranker: tuple[dt.date, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "ranker": [n.isoformat() for n in self.ranker],
            "validation": [n.isoformat() for n in self.validation],
            "test": self.test.isoformat(),
            "window_days": self.window_days,
        }


def plan_nights(ds: dt.date, window_days: int, validation_nights: int, ranker_nights: int = 0) -> NightPlan:
    """The test night whose window ends on ``ds``, ``validation_nights`` windows before it and
    ``ranker_nights`` windows before those."""
    test = ds - dt.timedelta(days=window_days - 1)
    nights = validation_nights + ranker_nights
    earlier = [test - dt.timedelta(days=window_days * i) for i in range(nights, 0, -1)]
    return NightPlan(tuple(earlier[ranker_nights:]), test, window_days, tuple(earlier[:ranker_nights]))


def night_truth(warehouse: Warehouse, night: dt.date, window_days: int, seen_horizon_days: int) -> pa.Table:
    """``user_id, item_id``: what users found after ``night`` (see ``sql/queries/evaluation/truth.sql``)."""
    return warehouse.run_query(
        TRUTH_QUERY, night, window_days=window_days, seen_horizon_days=seen_horizon_days
    )


def choose_window(warehouse: Warehouse, ds: dt.date, config: SelectionConfig, seen_horizon_days: int) -> int:
    """The configured window, or the shortest choice whose test night has ``min_eval_users`` users.

    Only choices whose nights leave a week of data before the first validation night, and whose nights
    all have features built, are considered. When none reaches ``min_eval_users`` (a small or sparse
    log), the one with the most users is used, and a warning says so: a short log is evaluated on the
    users it has, with wider intervals.

    Raises:
        NotEnoughHistory: no choice has a single user with an engagement to find.
    """
    if config.window_days is not None:
        return config.window_days
    days = warehouse.partitions("raw_events")
    built = warehouse.partitions("user_features")
    counts = {}
    for window in sorted(config.window_choices):
        plan = plan_nights(ds, window, config.validation_nights)
        if days and plan.validation[0] - dt.timedelta(days=MIN_DAYS_BEFORE) < days[0]:
            break
        if built and plan.validation[0] - dt.timedelta(days=1) < built[0]:
            break  # its first night would be served from features that were never built
        night = plan.test
        truth = night_truth(warehouse, night, window, seen_horizon_days)
        counts[window] = len(pc.unique(truth.column("user_id")))
        if counts[window] >= config.min_eval_users:
            return window
    if not counts or max(counts.values()) == 0:
        raise NotEnoughHistory(
            f"no evaluation window ending on {ds} has a user with an engagement to find, or leaves "
            f"{MIN_DAYS_BEFORE} days of data before its first validation night, with the features of its "
            f"nights built (users per window length in days: {counts}); load more data or build features "
            "for more days"
        )
    window = max(counts, key=lambda w: (counts[w], -w))
    log.warning(
        "no evaluation window ending on %s has %d users (users per window length in days: %s); "
        "using %d days with %d users",
        ds,
        config.min_eval_users,
        counts,
        window,
        counts[window],
    )
    return window
