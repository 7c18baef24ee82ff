"""The ``raw_events`` rows of one day from the generated interactions: sorted by user and time, given
event ids, and with ``bad_row_fraction`` of the rows made bad in the ways real logs go bad."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.schema import PARTITION_COLUMN, RAW_EVENTS
from pipelines.data.world.vocabulary import item_id, user_id


@dataclass(frozen=True)
class Interactions:
    """One day's interactions, one entry per event, in no particular order.

    ``ts`` is in seconds since the start of the post history; ``position`` is None when the events were
    not shown in a feed.
    """

    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray  # event type names (object)
    ts: np.ndarray
    position: np.ndarray | None


def event_table(
    found: Interactions,
    i: int,
    day: dt.date,
    history_start: dt.date,
    bad_row_fraction: float,
    rng: np.random.Generator,
) -> pa.Table:
    """The ``raw_events`` partition of day ``i`` (``day``) holding ``found`` plus the bad rows.

    Args:
        history_start: the time ``found.ts`` counts from.
        bad_row_fraction: share of the day's rows to make bad (rounded: a day with few rows has none).
    """
    eu, ei, et, ets = found.user, found.item, found.kind, found.ts
    epos = found.position if found.position is not None else np.zeros(len(eu), np.int64)
    order = np.lexsort((ets, eu))
    eu, ei, et, ets, epos = eu[order], ei[order], et[order], ets[order], epos[order]
    event_ids = np.array([f"e{i:04d}-{k:08d}" for k in range(len(eu))], dtype=object)
    users_s = np.array([user_id(x) for x in eu], dtype=object)
    items_s = np.array([item_id(x) for x in ei], dtype=object)
    base = np.datetime64(dt.datetime.combine(history_start, dt.time()), "us")
    ts_us = base + ets.astype("timedelta64[s]")
    table = {
        "event_id": event_ids,
        "user_id": users_s,
        "item_id": items_s,
        "event_type": et,
        "event_ts": ts_us,
        "position": epos.astype(np.int64),
    }
    table = corrupt(table, rng, day, round(len(eu) * bad_row_fraction))
    n = len(table["event_id"])
    position = pa.array(table["position"], type=pa.int64())
    if found.position is None:
        position = pa.nulls(n, pa.int64())
    return pa.table(
        {
            "event_id": pa.array(table["event_id"], type=pa.string()),
            "user_id": pa.array(table["user_id"], type=pa.string()),
            "item_id": pa.array(table["item_id"], type=pa.string()),
            "event_type": pa.array(table["event_type"], type=pa.string()),
            "event_ts": pa.array(table["event_ts"], type=pa.timestamp("us")).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "position": position,
            PARTITION_COLUMN: pa.array([day] * n, type=pa.date32()),
        },
        schema=RAW_EVENTS,
    )


def corrupt(
    table: dict[str, np.ndarray], rng: np.random.Generator, day: dt.date, n_bad: int
) -> dict[str, np.ndarray]:
    """Make ``n_bad`` of the rows bad in one of the ways real logs go bad.

    Returns:
        The columns with the bad rows (a copy; ``table`` itself when there is nothing to corrupt).
    """
    n = len(table["event_id"])
    if n_bad == 0:
        return table
    table = {k: v.copy() for k, v in table.items()}
    rows = rng.choice(n, size=n_bad, replace=False)
    future = np.datetime64(dt.datetime.combine(day + dt.timedelta(days=3), dt.time()), "us")
    for j, r in enumerate(rows):
        kind = j % 5
        if kind == 0:
            table["user_id"][r] = None
        elif kind == 1:
            table["item_id"][r] = f"p-missing-{r}"
        elif kind == 2:
            table["event_ts"][r] = future
        elif kind == 3:
            table["event_type"][r] = "clik"
    dup = rows[4::5]  # the fifth kind: the same event delivered twice
    for k in table:
        table[k] = np.concatenate([table[k], table[k][dup]])
    return table
