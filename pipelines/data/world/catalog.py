"""The posts of the synthetic world: hidden topic and quality, source, author, language, creation time,
deletion day, tags and text, all drawn once; and the ``raw_items`` rows that arrive on each day (the posts
created that day, every earlier post on the first day, and the day's deletions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.core.schema import CONTENT_TYPES, PARTITION_COLUMN, POST_TYPES, RAW_ITEMS
from pipelines.core.settings import WorldConfig
from pipelines.data.world.regimes import Regime
from pipelines.data.world.sampling import pick_in_group
from pipelines.data.world.vocabulary import (
    LANGUAGE_WEIGHTS,
    LANGUAGES,
    SPICE,
    SUMMARY_TEMPLATES,
    TITLE_TEMPLATES,
    TOPIC_TAGS,
    item_id,
)


class Catalog:
    """Every post of a world ending on ``end``, with the history of posts before its first day ``start``
    (``regime`` sets the length of that history and the spread of quality)."""

    def __init__(
        self,
        config: WorldConfig,
        regime: Regime,
        n_topics: int,
        start: dt.date,
        end: dt.date,
        rng: np.random.Generator,
        text_rng: np.random.Generator,
    ) -> None:
        self.config, self.n_topics, self.start = config, n_topics, start
        self.history_start = start - dt.timedelta(days=regime.history_days)
        self._draw_items(rng, end, regime.quality_sigma)
        self._draw_text(text_rng)

    def _draw_items(self, rng: np.random.Generator, end: dt.date, quality_sigma: float) -> None:
        cfg, n = self.config, self.config.n_items
        topic_pop = rng.dirichlet(np.full(self.n_topics, 2.0))
        self.topic = rng.choice(self.n_topics, size=n, p=topic_pop)
        self.quality = rng.lognormal(0.0, quality_sigma, size=n)
        n_sources = max(5, min(200, n // 40))
        self.n_sources = n_sources
        source_topic = rng.integers(0, self.n_topics, size=n_sources)
        # A post's source mostly covers its topic.
        self.source = pick_in_group(rng, source_topic, self.n_topics, self.topic, follow=0.85)
        n_authors = max(5, n // 6)
        author_source = rng.integers(0, n_sources, size=n_authors)
        self.author = pick_in_group(rng, author_source, n_sources, self.source, follow=1.0)
        span_s = (end - self.history_start).days * 86400 + 86399
        offsets = np.sort(rng.integers(0, span_s, size=n))
        base = dt.datetime.combine(self.history_start, dt.time())  # naive UTC
        self.created_s = offsets  # seconds since history_start
        self.created = np.array(base, dtype="datetime64[us]") + offsets.astype("timedelta64[s]")
        self.language = rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_WEIGHTS)
        self.deleted_day = np.where(
            rng.random(n) < 0.01, rng.integers(0, cfg.n_days, size=n), -1
        )  # day index on which a post gets deleted, -1 = never

    def _draw_text(self, rng: np.random.Generator) -> None:
        """Draw every post's tags and text once, so a post has the same content whichever day it is read."""
        n, per_topic = self.config.n_items, len(TOPIC_TAGS[0])
        order = np.argsort(rng.random((n, per_topic)), axis=1)  # a random permutation of the topic's tags
        n_tags = rng.integers(1, 4, size=n)
        extra = np.where(rng.random(n) < 0.15, rng.integers(0, self.n_topics, size=n), -1)
        self.tags = [
            list(dict.fromkeys([TOPIC_TAGS[t][k] for k in perm[:m]] + ([TOPIC_TAGS[x][0]] if x >= 0 else [])))
            for t, perm, m, x in zip(self.topic, order, n_tags, extra, strict=True)
        ]
        title_tpl = rng.integers(0, len(TITLE_TEMPLATES), size=n)
        summary_tpl = rng.integers(0, len(SUMMARY_TEMPLATES), size=n)
        spice = rng.integers(0, len(SPICE), size=n)
        self.title, self.summary = [], []
        for j in range(n):
            words = TOPIC_TAGS[self.topic[j]]
            a, b = words[order[j, 0]], words[order[j, 1]]
            title = TITLE_TEMPLATES[title_tpl[j]].format(a=a, b=b)
            self.title.append(title[0].upper() + title[1:] + SPICE[spice[j]])
            self.summary.append(SUMMARY_TEMPLATES[summary_tpl[j]].format(a=a, b=b))

    def day_start_s(self, i: int) -> int:
        """The start of day ``i`` of the window in seconds since the start of the post history."""
        return (self.start + dt.timedelta(days=i) - self.history_start).days * 86400

    def live(self, i: int) -> np.ndarray:
        """The posts created by the end of day ``i`` and not deleted before it."""
        day_start_s = self.day_start_s(i)
        return np.flatnonzero(
            (self.created_s < day_start_s + 86400) & ~((self.deleted_day >= 0) & (self.deleted_day < i))
        )

    def rows(self, i: int) -> pa.Table:
        """The ``raw_items`` rows of day ``i``: new posts (all earlier ones on day 0) and deletions."""
        day_start_s = self.day_start_s(i)
        if i == 0:
            new = np.flatnonzero(self.created_s < day_start_s + 86400)
        else:
            new = np.flatnonzero((self.created_s >= day_start_s) & (self.created_s < day_start_s + 86400))
        deleted_today = np.flatnonzero(self.deleted_day == i)
        deleted_today = deleted_today[self.created_s[deleted_today] < day_start_s + 86400]
        idx = np.concatenate([new, np.setdiff1d(deleted_today, new)])
        deleted = (self.deleted_day[idx] >= 0) & (self.deleted_day[idx] <= i)
        return self._rows(idx, deleted, self.start + dt.timedelta(days=i))

    def _rows(self, idx: np.ndarray, deleted: np.ndarray, day: dt.date) -> pa.Table:
        n = len(idx)
        return pa.table(
            {
                "item_id": [item_id(j) for j in idx],
                "title": [self.title[j] for j in idx],
                "summary": [self.summary[j] for j in idx],
                "tags": [self.tags[j] for j in idx],
                "source": [f"source-{s:03d}" for s in self.source[idx]],
                "author": [f"author-{a:05d}" for a in self.author[idx]],
                "post_type": [POST_TYPES[(j * 7) % len(POST_TYPES)] for j in idx],
                "content_type": [CONTENT_TYPES[(j * 3) % len(CONTENT_TYPES)] for j in idx],
                "language": [LANGUAGES[k] for k in self.language[idx]],
                "url": [f"https://posts.example/{item_id(j)}" for j in idx],
                "created_at": pa.array(self.created[idx], type=pa.timestamp("us", tz="UTC")),
                "deleted": pa.array(deleted, type=pa.bool_()),
                PARTITION_COLUMN: pa.array([day] * n, type=pa.date32()),
            },
            schema=RAW_ITEMS,
        )
