"""The world: a catalog, its users and their day-by-day interactions ending on a date, and the raw
partitions (``raw_events``, ``raw_items``, ``raw_users``) of each day. Deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.schema import RAW_EVENTS
from pipelines.core.settings import WorldConfig
from pipelines.data.world.catalog import Catalog
from pipelines.data.world.events import event_table
from pipelines.data.world.feed import Feed
from pipelines.data.world.users import Users
from pipelines.data.world.vocabulary import TOPIC_TAGS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldTruth:
    """The hidden structure behind the world, for tests and benchmarks (never read by the pipeline)."""

    user_topic_pref: np.ndarray  # (n_users, n_topics), rows sum to 1
    item_topic: np.ndarray  # (n_items,)
    item_quality: np.ndarray  # (n_items,)


@dataclass(frozen=True)
class WorldDay:
    """The raw rows that arrive on one day."""

    ds: dt.date
    events: pa.Table
    items: pa.Table
    users: pa.Table


class World:
    """A generated world ending on ``end_ds``: users, items and a generator of daily raw partitions."""

    def __init__(self, config: WorldConfig, end_ds: dt.date) -> None:
        self.config = config
        self.end = end_ds
        self.start = self.end - dt.timedelta(days=config.n_days - 1)
        self.n_topics = min(config.n_topics, len(TOPIC_TAGS))
        rng = np.random.default_rng(config.seed)
        self.catalog = Catalog(
            config, self.n_topics, self.start, self.end, rng, np.random.default_rng([config.seed, 1])
        )
        self.users = Users(
            config,
            self.n_topics,
            self.catalog.n_sources,
            self.start,
            rng,
            np.random.default_rng([config.seed, 2]),
        )
        self._feed = Feed(self.catalog, self.users)

    @property
    def truth(self) -> WorldTruth:
        """The hidden structure (never read by the pipeline)."""
        return WorldTruth(self.users.pref, self.catalog.topic, self.catalog.quality)

    def days(self) -> list[dt.date]:
        """The days of the window, first to last."""
        return [self.start + dt.timedelta(days=i) for i in range(self.config.n_days)]

    def iter_days(self) -> Iterator[WorldDay]:
        """Yield each day's raw partitions in date order (deterministic)."""
        for i, ds in enumerate(self.days()):
            rng = np.random.default_rng([self.config.seed, i])
            started = time.perf_counter()
            day = WorldDay(ds, self._events(i, ds, rng), self.catalog.rows(i), self.users.rows(i))
            log.info(
                "world %s: %d events, %d items, %d users in %.1fs",
                ds,
                day.events.num_rows,
                day.items.num_rows,
                day.users.num_rows,
                time.perf_counter() - started,
            )
            yield day

    def _events(self, i: int, ds: dt.date, rng: np.random.Generator) -> pa.Table:
        found = self._feed.day(i, rng)
        if found is None:
            return RAW_EVENTS.empty_table()
        return event_table(found, i, ds, self.catalog.history_start, self.config.bad_row_fraction, rng)
