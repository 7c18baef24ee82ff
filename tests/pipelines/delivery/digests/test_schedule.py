"""Digest schedule: send windows and slots across time zones, DST changes and the date line."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.delivery.digests.schedule import SendSlot, due_slot, send_slots, send_window
from tests.pipelines.delivery.digests.digest_world import DS, UTC


def test_send_window_is_the_utc_day_after_ds() -> None:
    assert send_window(DS) == (dt.datetime(2026, 3, 8, tzinfo=UTC), dt.datetime(2026, 3, 9, tzinfo=UTC))


def test_new_york_on_the_spring_forward_weekend() -> None:
    # Clocks jump 02:00 EST -> 03:00 EDT on Sun 2026-03-08. 07:00 EDT = 07 + 4 = 11:00Z.
    assert send_slots(DS, "America/New_York", 7) == (
        SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 11, tzinfo=UTC)),
    )
    # Saturday's 07:00 EST = 12:00Z on 03-07 belongs to the run before.
    assert send_slots(dt.date(2026, 3, 6), "America/New_York", 7)[0].send_at == dt.datetime(
        2026, 3, 7, 12, tzinfo=UTC
    )
    assert due_slot(DS, "America/New_York", "weekly", 6, 7) is not None  # Sunday
    assert due_slot(DS, "America/New_York", "weekly", 5, 7) is None  # Saturday
    # 02:00 does not exist that day: it moves forward by the gap, 02:00 EST = 07:00Z (= 03:00 EDT).
    assert send_slots(DS, "America/New_York", 2)[0].send_at == dt.datetime(2026, 3, 8, 7, tzinfo=UTC)


def test_two_slots_in_one_window_send_one_message() -> None:
    # Send hour 19 in New York: Sat 03-07 19:00 EST = 24:00Z = 03-08 00:00Z (window start, included),
    # Sun 03-08 19:00 EDT = 23:00Z on 03-08; both in the window of DS.
    sat = SendSlot(dt.date(2026, 3, 7), dt.datetime(2026, 3, 8, 0, tzinfo=UTC))
    sun = SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 23, tzinfo=UTC))
    assert send_slots(DS, "America/New_York", 19) == (sat, sun)
    assert due_slot(DS, "America/New_York", "daily", None, 19) == sat
    assert due_slot(DS, "America/New_York", "weekly", 6, 19) == sun


def test_fall_back_weekend_and_the_repeated_hour() -> None:
    # Clocks go back 02:00 EDT -> 01:00 EST on Sun 2026-11-01. Send hour 19: Sat 10-31 19:00 EDT = 23:00Z
    # on 10-31 and Sun 11-01 19:00 EST = 11-02 00:00Z, so the window [11-01Z, 11-02Z) of ds 10-31 holds none,
    assert send_slots(dt.date(2026, 10, 31), "America/New_York", 19) == ()
    assert due_slot(dt.date(2026, 10, 31), "America/New_York", "daily", None, 19) is None
    # and the run of ds 11-01 has Sunday's slot at its window start.
    assert send_slots(dt.date(2026, 11, 1), "America/New_York", 19) == (
        SendSlot(dt.date(2026, 11, 1), dt.datetime(2026, 11, 2, 0, tzinfo=UTC)),
    )
    # 01:00 happens twice on 11-01: the first one, EDT, 01 + 4 = 05:00Z.
    assert send_slots(dt.date(2026, 10, 31), "America/New_York", 1)[0].send_at == dt.datetime(
        2026, 11, 1, 5, tzinfo=UTC
    )


@pytest.mark.parametrize("send_hour", [0, 7, 19, 23])
@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/London", "Pacific/Kiritimati", "Australia/Lord_Howe"]
)
def test_consecutive_runs_cover_every_local_day_exactly_once(zone: str, send_hour: int) -> None:
    # From ds 2026-02-20 to 2026-11-15 (both DST changes of the northern zones, two of Lord Howe's
    # half-hour ones), collect the local days of all slots: each day once, no gap.
    days = []
    ds = dt.date(2026, 2, 20)
    while ds <= dt.date(2026, 11, 15):
        days += [slot.local_date for slot in send_slots(ds, zone, send_hour)]
        ds += dt.timedelta(days=1)
    assert days == [days[0] + dt.timedelta(days=n) for n in range(len(days))]
    assert len(days) >= (dt.date(2026, 11, 15) - dt.date(2026, 2, 20)).days - 1


def test_date_line_kiritimati_and_pago_pago_get_different_local_days() -> None:
    # Kiritimati is UTC+14: 07:00 local = 17:00Z the day before, so DS's window holds Mon 03-09 07:00.
    # Pago Pago is UTC-11: 07:00 local = 18:00Z the same day, so the window holds Sun 03-08 07:00.
    assert send_slots(DS, "Pacific/Kiritimati", 7) == (
        SendSlot(dt.date(2026, 3, 9), dt.datetime(2026, 3, 8, 17, tzinfo=UTC)),
    )
    assert send_slots(DS, "Pacific/Pago_Pago", 7) == (
        SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 18, tzinfo=UTC)),
    )
    monday, sunday = 0, 6
    assert due_slot(DS, "Pacific/Kiritimati", "weekly", monday, 7) is not None
    assert due_slot(DS, "Pacific/Pago_Pago", "weekly", monday, 7) is None
    assert due_slot(DS, "Pacific/Kiritimati", "weekly", sunday, 7) is None
    assert due_slot(DS, "Pacific/Pago_Pago", "weekly", sunday, 7) is not None


def test_around_midnight() -> None:
    # Hour 0 in UTC: Sun 03-08 00:00Z is the window's first instant, included.
    assert send_slots(DS, "UTC", 0) == (
        SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 0, tzinfo=UTC)),
    )
    # Hour 0 in Berlin (UTC+1): Sun 00:00 = Sat 23:00Z (run before); Mon 03-09 00:00 = Sun 23:00Z (this run).
    assert send_slots(DS, "Europe/Berlin", 0) == (
        SendSlot(dt.date(2026, 3, 9), dt.datetime(2026, 3, 8, 23, tzinfo=UTC)),
    )
    # Hour 23 in UTC: Sun 23:00Z is in, Mon 23:00Z is the next run's.
    assert [s.local_date for s in send_slots(DS, "UTC", 23)] == [dt.date(2026, 3, 8)]


def test_bad_timezone_and_schedule_raise() -> None:
    for zone in ["Mars/Olympus_Mons", "", " UTC", "../etc/passwd", "europe/berlin", "localtime", "a" * 300]:
        with pytest.raises(ValueError, match="timezone"):
            send_slots(DS, zone, 7)
    with pytest.raises(ValueError, match="frequency"):
        due_slot(DS, "UTC", "hourly", 0, 7)
    with pytest.raises(ValueError, match="weekday"):
        due_slot(DS, "UTC", "weekly", 7, 7)
