"""The users of the synthetic world: hidden topic preference and activity, language, signup day (most
before the window, some during it), and a profile of selected tags, blocks and digest preferences; and the
``raw_users`` rows that arrive on each day (everyone signed up by the first day, then each day's signups)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.core.schema import DIGEST_FREQUENCIES, PARTITION_COLUMN, RAW_USERS
from pipelines.core.settings import WorldConfig
from pipelines.data.world.regimes import Regime
from pipelines.data.world.vocabulary import LANGUAGE_WEIGHTS, LANGUAGES, TIMEZONES, TOPIC_TAGS, user_id


class Users:
    """Every user of a world whose first day is ``start`` (``regime`` sets the share signed up before)."""

    def __init__(
        self,
        config: WorldConfig,
        regime: Regime,
        n_topics: int,
        n_sources: int,
        start: dt.date,
        rng: np.random.Generator,
        profile_rng: np.random.Generator,
    ) -> None:
        self.config, self.n_topics, self.n_sources, self.start = config, n_topics, n_sources, start
        self._draw_users(rng, regime.existing_users)
        self._draw_profiles(profile_rng)

    def _draw_users(self, rng: np.random.Generator, existing: float) -> None:
        cfg, n = self.config, self.config.n_users
        alpha = np.full(self.n_topics, 0.25)
        self.pref = rng.dirichlet(alpha, size=n)
        self.language = rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_WEIGHTS)
        self.activity = rng.lognormal(0.0, 0.7, size=n)
        # Most users exist before the window; some sign up during it (cold start on their first days).
        signup_day = np.where(
            rng.random(n) < existing, -rng.integers(1, 400, size=n), rng.integers(0, cfg.n_days, size=n)
        )
        self.signup_day = signup_day
        self.signup_s = rng.integers(0, 86400, size=n)

    def _draw_profiles(self, rng: np.random.Generator) -> None:
        """Draw every user's profile once: selected tags from their favourite topics, rare blocks."""
        n, per_topic = self.config.n_users, len(TOPIC_TAGS[0])
        ranked_topics = np.argsort(-self.pref, axis=1)
        n_top = rng.integers(1, 4, size=n)
        tag_pick = rng.integers(0, per_topic, size=(n, 3))
        self.selected = [
            sorted(
                {TOPIC_TAGS[t][k] for t, k in zip(top[:m], picks[:m], strict=True)} | {TOPIC_TAGS[top[0]][0]}
            )
            for top, m, picks in zip(ranked_topics, n_top, tag_pick, strict=True)
        ]
        disliked = ranked_topics[:, -1]
        block_tag = rng.random(n) < 0.1
        block_tag_pick = rng.integers(0, per_topic, size=n)
        self.blocked_tags = [
            [TOPIC_TAGS[d][k]] if b else []
            for d, k, b in zip(disliked, block_tag_pick, block_tag, strict=True)
        ]
        block_source = rng.random(n) < 0.05
        source_pick = rng.integers(0, self.n_sources, size=n)
        self.blocked_sources = [
            [f"source-{s:03d}"] if b else [] for s, b in zip(source_pick, block_source, strict=True)
        ]
        self.opt_in = rng.random(n) < 0.6
        self.weekly = rng.random(n) < 0.7
        self.weekday = rng.integers(0, 7, size=n)
        self.timezone = rng.integers(0, len(TIMEZONES), size=n)

    def rows(self, i: int) -> pa.Table:
        """The ``raw_users`` rows of day ``i``: all signed up by then on day 0, later the day's signups."""
        idx = np.flatnonzero(self.signup_day <= 0) if i == 0 else np.flatnonzero(self.signup_day == i)
        start = np.datetime64(dt.datetime.combine(self.start, dt.time()), "us")
        signup = start + (self.signup_day[idx] * 86400 + self.signup_s[idx]).astype("timedelta64[s]")
        return pa.table(
            {
                "user_id": [user_id(u) for u in idx],
                "email": [f"reader{u}@example.com" for u in idx],
                "signup_ts": pa.array(signup, pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
                "language": [LANGUAGES[k] for k in self.language[idx]],
                "selected_tags": [self.selected[u] for u in idx],
                "blocked_tags": [self.blocked_tags[u] for u in idx],
                "blocked_sources": [self.blocked_sources[u] for u in idx],
                "digest_opt_in": pa.array(self.opt_in[idx], pa.bool_()),
                "digest_frequency": [DIGEST_FREQUENCIES[int(w)] for w in self.weekly[idx]],
                "digest_weekday": pa.array(self.weekday[idx], pa.int64()),
                "timezone": [TIMEZONES[k] for k in self.timezone[idx]],
                PARTITION_COLUMN: pa.array([self.start + dt.timedelta(days=i)] * len(idx), type=pa.date32()),
            },
            schema=RAW_USERS,
        )
