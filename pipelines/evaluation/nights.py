"""Which past nights a training run replays, and how long the window after each night is.

A night ``T`` is scored on what users did in ``[T, T + window)``; the lists of that night are the ones the
nightly job would have published from the data of ``T - 1``. The test night's window ends on the run date,
so every engagement up to it counts; the validation nights lie before it, one window apart, and the
systems are chosen on them, never on the test night. The window is the shortest choice in which enough
users had something to find, so sparse data (a ratings log) gets a long one and a busy feed a short one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import PermanentError
from pipelines.core.settings import SelectionConfig
from pipelines.core.warehouse import Warehouse

TRUTH_QUERY = "evaluation/truth"


class NotEnoughHistory(PermanentError):
    """The data is too short to hold the validation and test nights."""


@dataclass(frozen=True)
class NightPlan:
    """The nights of one training run: ``validation`` (oldest first) and ``test``, and the window."""

    validation: tuple[dt.date, ...]
    test: dt.date
    window_days: int

    def to_json(self) -> dict[str, object]:
        return {
            "validation": [n.isoformat() for n in self.validation],
            "test": self.test.isoformat(),
            "window_days": self.window_days,
        }


def plan_nights(ds: dt.date, window_days: int, validation_nights: int) -> NightPlan:
    """The test night whose window ends on ``ds``, and ``validation_nights`` windows before it."""
    test = ds - dt.timedelta(days=window_days - 1)
    validation = tuple(test - dt.timedelta(days=window_days * i) for i in range(validation_nights, 0, -1))
    return NightPlan(validation, test, window_days)


def night_truth(warehouse: Warehouse, night: dt.date, window_days: int, seen_horizon_days: int) -> pa.Table:
    """``user_id, item_id``: what users found after ``night`` (see ``sql/queries/evaluation/truth.sql``)."""
    return warehouse.run_query(
        TRUTH_QUERY, night, window_days=window_days, seen_horizon_days=seen_horizon_days
    )


def choose_window(warehouse: Warehouse, ds: dt.date, config: SelectionConfig, seen_horizon_days: int) -> int:
    """The configured window, or the shortest choice whose test night has ``min_eval_users`` users.

    Raises:
        NotEnoughHistory: no choice reaches ``min_eval_users`` users.
    """
    if config.window_days is not None:
        return config.window_days
    counts = {}
    for window in sorted(config.window_choices):
        night = ds - dt.timedelta(days=window - 1)
        truth = night_truth(warehouse, night, window, seen_horizon_days)
        counts[window] = len(pc.unique(truth.column("user_id")))
        if counts[window] >= config.min_eval_users:
            return window
    raise NotEnoughHistory(
        f"no evaluation window ending on {ds} has {config.min_eval_users} users with an engagement to find "
        f"(users per window length in days: {counts}); lower selection.min_eval_users or load more data"
    )
