"""When a digest is due: a user's send slots in the send window of the run for ``ds``.

The run for ``ds`` prepares the sends of the UTC day after it, ``[ds+1 00:00, ds+2 00:00)``; consecutive
windows tile time, so each local send slot belongs to exactly one run, and every send comes after the data
of ``ds`` closed and within a day of it. A slot is ``send_hour_local`` on a local day in the user's IANA
zone, so the local send day is ds+1 for most of the world and ds+2 far east. Daily users are due when the
window holds a slot, weekly users when it holds one on their ``digest_weekday`` (0 = Monday). Around a
DST change a window can hold two slots of a zone (the user gets one message, for the first qualifying
slot) or none (nobody in that zone is due), but only for send hours near midnight UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from dataclasses import dataclass

from pipelines.core.schema import DIGEST_FREQUENCIES


@dataclass(frozen=True)
class SendSlot:
    """One send time of a user: ``send_hour_local`` on ``local_date`` in their zone, as a UTC instant."""

    local_date: dt.date
    send_at: dt.datetime


def send_window(ds: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC window whose send slots the run for ``ds`` prepares: ``[ds+1 00:00, ds+2 00:00)``."""
    start = dt.datetime.combine(ds, dt.time(), tzinfo=dt.UTC)
    start += dt.timedelta(days=1)
    return start, start + dt.timedelta(days=1)


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # "localtime" is whatever this machine is set to, "Factory" a placeholder: neither names a place,
    # and the first would make the output depend on the machine.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory", "posixrules"})


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    if name not in _zone_names():
        raise ValueError(f"timezone must be an IANA name like Europe/Berlin, got {name!r}")
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=4096)
def send_slots(ds: dt.date, timezone: str, send_hour: int) -> tuple[SendSlot, ...]:
    """Every send slot of a user in ``timezone`` that falls in the window of the run for ``ds``.

    Args:
        ds: run date.
        timezone: IANA zone name of the user.
        send_hour: local wall-clock hour of the send, 0..23.

    Returns:
        The slots in time order: usually one, none or two only around a DST change.

    Raises:
        ValueError: ``timezone`` is not an IANA name, or ``send_hour`` is outside 0..23.
    """
    if not 0 <= send_hour <= 23:
        raise ValueError(f"send_hour must be 0..23, got {send_hour}")
    zone = _zone(timezone)
    start, end = send_window(ds)
    run_date = ds
    slots = []
    # UTC offsets lie within -12..+14 h, so only the local days ds .. ds+2 can have a slot in the
    # window; one day more on each side costs nothing and needs no proof.
    for days in range(-1, 4):
        local_date = run_date + dt.timedelta(days=days)
        # fold=0: a skipped wall time maps forward by the gap, a repeated one to its first occurrence.
        local = dt.datetime.combine(local_date, dt.time(send_hour), tzinfo=zone)
        send_at = local.astimezone(dt.UTC)
        if start <= send_at < end:
            slots.append(SendSlot(local_date, send_at))
    return tuple(slots)


def due_slot(
    ds: dt.date, timezone: str, frequency: str | None, weekday: int | None, send_hour: int
) -> SendSlot | None:
    """The slot a user's digest is sent at by the run for ``ds``, or None when it is not due.

    Args:
        ds: run date.
        timezone: IANA zone name of the user.
        frequency: ``daily`` or ``weekly``.
        weekday: for weekly users, the local weekday of the send, 0 = Monday .. 6 = Sunday.
        send_hour: local wall-clock hour of the send.

    Raises:
        ValueError: bad timezone (message starts with ``timezone``) or a bad schedule (``frequency``).
    """
    slots = send_slots(ds, timezone, send_hour)
    if frequency not in DIGEST_FREQUENCIES:
        raise ValueError(f"frequency must be one of {DIGEST_FREQUENCIES}, got {frequency!r}")
    if frequency == "daily":
        return slots[0] if slots else None
    if weekday is None or not 0 <= weekday <= 6:
        raise ValueError(f"frequency weekly needs a weekday 0..6, got {weekday!r}")
    return next((slot for slot in slots if slot.local_date.weekday() == weekday), None)
