"""The world: a catalog, its users and their day-by-day interactions (a logged feed, or a ratings log)
in the configured regime, ending on a date, and the raw partitions (``raw_events``, ``raw_items``,
``raw_users``) of each day. Deterministic for a seed."""

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
from pipelines.data.world.communities import Communities
from pipelines.data.world.events import Interactions, event_table
from pipelines.data.world.feed import Feed
from pipelines.data.world.ratings import RatingsLog
from pipelines.data.world.regimes import REGIMES
from pipelines.data.world.users import Users
from pipelines.data.world.vocabulary import TOPIC_TAGS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldTruth:
    """The hidden structure behind the world, for tests and benchmarks (never read by the pipeline).

    The communities are set in the collaborative regime only, the taste factors in the ratings regime only
    (a user's taste for a post is the dot product of the user's and the post's rows).
    """

    regime: str
    user_topic_pref: np.ndarray  # (n_users, n_topics), rows sum to 1
    item_topic: np.ndarray  # (n_items,)
    item_quality: np.ndarray  # (n_items,)
    user_community: np.ndarray | None = None  # (n_users,)
    item_community: np.ndarray | None = None  # (n_items,)
    user_factors: np.ndarray | None = None  # (n_users, n_topics + 8)
    item_factors: np.ndarray | None = None  # (n_items, n_topics + 8)


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
        self.regime = REGIMES[config.regime]
        self.end = end_ds
        self.start = self.end - dt.timedelta(days=config.n_days - 1)
        self.n_topics = min(config.n_topics, len(TOPIC_TAGS))
        rng = np.random.default_rng(config.seed)
        self.catalog = Catalog(
            config,
            self.regime,
            self.n_topics,
            self.start,
            self.end,
            rng,
            np.random.default_rng([config.seed, 1]),
        )
        self.users = Users(
            config,
            self.regime,
            self.n_topics,
            self.catalog.n_sources,
            self.start,
            rng,
            np.random.default_rng([config.seed, 2]),
        )
        # Streams of their own ([seed, 0, k]: no day's stream [seed, i] is the same).
        self.communities = None
        if self.regime.n_communities:
            self.communities = Communities.draw(
                config.n_users,
                config.n_items,
                self.regime.n_communities,
                np.random.default_rng([config.seed, 0, 3]),
            )
        self._log: Feed | RatingsLog
        if self.regime.feed is None:
            self._log = RatingsLog(self.catalog, self.users, np.random.default_rng([config.seed, 0, 4]))
        else:
            self._log = Feed(self.catalog, self.users, self.regime.feed, self.communities)

    @property
    def truth(self) -> WorldTruth:
        """The hidden structure (never read by the pipeline)."""
        communities, ratings = self.communities, self._log if isinstance(self._log, RatingsLog) else None
        return WorldTruth(
            regime=self.config.regime,
            user_topic_pref=self.users.pref,
            item_topic=self.catalog.topic,
            item_quality=self.catalog.quality,
            user_community=None if communities is None else communities.user,
            item_community=None if communities is None else communities.item,
            user_factors=None if ratings is None else ratings.user_factors,
            item_factors=None if ratings is None else ratings.item_factors,
        )

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

    def interactions(self, i: int, rng: np.random.Generator) -> Interactions | None:
        """The interactions of day ``i`` drawn from ``rng`` (the day's own stream ``[seed, i]`` gives the
        day's raw events; another stream another draw of the same day, for benchmarks' ceilings); None
        when nothing happened."""
        return self._log.day(i, rng)

    def _events(self, i: int, ds: dt.date, rng: np.random.Generator) -> pa.Table:
        found = self.interactions(i, rng)
        if found is None:
            return RAW_EVENTS.empty_table()
        return event_table(found, i, ds, self.catalog.history_start, self.config.bad_row_fraction, rng)
