"""``FeaturesDays``: the nightly DAG's days, one run per day whose features were built, never on a clock.

The nightly run of a day is started by the features run of that day (its last task triggers it with that
day as logical date), so every features run, scheduled or backfilled, gets its own nightly run and none
is folded into another. The timetable still has daily data intervals, so ``airflow backfill create``
works for the nightly DAG itself: a backfill asks for the days of a range and gets them.

What the scheduler asks is "the next automated run after the latest one, not catching up" (the DAG has
``catchup=False``); the answer is always "none". A backfill asks for the days of its range with catch-up
on, and gets every one. Registered with Airflow by ``nightfeed_plugin.py``, so the scheduler and the
API server can read it back from the serialized DAG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.timetables.interval import CronDataIntervalTimetable

if TYPE_CHECKING:
    from airflow.timetables.base import DagRunInfo, TimeRestriction

DAILY_AT_MIDNIGHT = "0 0 * * *"


class FeaturesDays(CronDataIntervalTimetable):
    """Daily UTC data intervals, as ``nightfeed_features`` has, whose runs only a trigger or a backfill makes.

    Use it on a DAG with ``catchup=False``: the scheduler's own request then finds no run to create.
    """

    def __init__(self) -> None:
        super().__init__(DAILY_AT_MIDNIGHT, timezone="UTC")
        self.description = "one run per day, started by that day's nightfeed_features run or by a backfill"

    @property
    def summary(self) -> str:
        return "after nightfeed_features"

    def next_dagrun_info_v2(
        self, *, last_dagrun_info: DagRunInfo | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        """The days of a backfill's range; nothing for the scheduler, which asks without catching up."""
        if not restriction.catchup:
            return None
        return super().next_dagrun_info_v2(last_dagrun_info=last_dagrun_info, restriction=restriction)

    def serialize(self) -> dict[str, str]:
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, str]) -> FeaturesDays:
        return cls()
