"""Synthetic world: a developer-news platform with users, posts and interaction logs.

The world is driven by hidden structure a good recommender can learn and a popularity baseline cannot:
every user has a sparse preference over topics, every post belongs to one topic (visible through its tags,
source, author and title words), posts have a hidden quality (popularity skew) and lose appeal as they age.
The platform's logged feed mixes fresh-popular posts with topic-matched ones; clicks follow preference,
quality, freshness and position; upvotes, bookmarks and shares follow clicks. A small share of raw rows is
deliberately malformed so the quality checks have something to catch.

Writes the raw tables (``raw_events``, ``raw_items``, ``raw_users``), one ``ds`` partition per day, so
the nightly job can be run for any date of the world. Deterministic for a seed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.core.schema import CONTENT_TYPES, DIGEST_FREQUENCIES, PARTITION_COLUMN, POST_TYPES, RAW_EVENTS, RAW_ITEMS, RAW_USERS
from pipelines.core.settings import WorldConfig
from pipelines.core.warehouse import Warehouse

log = logging.getLogger(__name__)

TOPIC_TAGS: tuple[tuple[str, ...], ...] = (
    ("python", "django", "fastapi", "pandas", "asyncio"),
    ("javascript", "react", "nodejs", "typescript", "vite"),
    ("rust", "cargo", "tokio", "wasm", "memory-safety"),
    ("go", "goroutines", "grpc", "kubernetes-operators", "gin"),
    ("machine-learning", "pytorch", "tensorflow", "llm", "mlops"),
    ("devops", "docker", "kubernetes", "terraform", "ci-cd"),
    ("databases", "postgres", "sql", "duckdb", "indexing"),
    ("security", "oauth", "cryptography", "supply-chain", "cve"),
    ("frontend", "css", "accessibility", "web-performance", "design-systems"),
    ("cloud", "gcp", "aws", "serverless", "bigquery"),
    ("mobile", "kotlin", "swift", "flutter", "android"),
    ("career", "interviews", "remote-work", "management", "open-source"),
    ("data-engineering", "airflow", "spark", "kafka", "dbt"),
    ("game-dev", "unity", "godot", "shaders", "physics"),
    ("systems", "linux", "ebpf", "compilers", "performance"),
    ("testing", "pytest", "property-testing", "fuzzing", "tdd"),
)
TITLE_TEMPLATES: tuple[str, ...] = (
    "How we scaled {a} to millions of requests",
    "A practical guide to {a} and {b}",
    "Why {a} beats {b} for most teams",
    "{a} in 2026: what changed",
    "Debugging {a}: lessons from production",
    "Ten {a} tips nobody told you",
    "Building a {a} pipeline with {b}",
    "The hidden cost of {a}",
    "From zero to {a}: a weekend project",
    "Understanding {a} internals",
    "{a} vs {b}: benchmarks and trade-offs",
    "Release notes: {a} gets faster {b} support",
)
SUMMARY_TEMPLATES: tuple[str, ...] = (
    "We walk through {a} step by step and show where {b} fits in.",
    "A hands-on look at {a}, with code, numbers and the mistakes we made.",
    "What the {a} community learned this year, and what it means for {b}.",
    "Short answer: it depends. Long answer: {a}, {b} and a lot of profiling.",
)
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "fr", "pt")
LANGUAGE_WEIGHTS: tuple[float, ...] = (0.82, 0.06, 0.05, 0.04, 0.03)
TIMEZONES: tuple[str, ...] = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
SPICE: tuple[str, ...] = ("", "", "", "", " 🚀", " — résumé", " (naïve approach)", " ✨")


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
        n_topics = min(config.n_topics, len(TOPIC_TAGS))
        self.n_topics = n_topics
        rng = np.random.default_rng(config.seed)
        self._make_items(rng)
        self._make_users(rng)
        self._item_text(np.random.default_rng([config.seed, 1]))
        self._user_profiles(np.random.default_rng([config.seed, 2]))

    # -- catalog ---------------------------------------------------------------------------------------
    def _make_items(self, rng: np.random.Generator) -> None:
        cfg, n = self.config, self.config.n_items
        topic_pop = rng.dirichlet(np.full(self.n_topics, 2.0))
        self.item_topic = rng.choice(self.n_topics, size=n, p=topic_pop)
        self.item_quality = rng.lognormal(0.0, 0.8, size=n)
        n_sources = max(5, min(200, n // 40))
        self.n_sources = n_sources
        source_topic = rng.integers(0, self.n_topics, size=n_sources)
        # A post's source mostly covers its topic.
        self.item_source = _pick_in_group(rng, source_topic, self.n_topics, self.item_topic, follow=0.85)
        n_authors = max(5, n // 6)
        author_source = rng.integers(0, n_sources, size=n_authors)
        self.item_author = _pick_in_group(rng, author_source, n_sources, self.item_source, follow=1.0)
        history_start = self.start - dt.timedelta(days=30)
        span_s = (self.end - history_start).days * 86400 + 86399
        offsets = np.sort(rng.integers(0, span_s, size=n))
        base = dt.datetime.combine(history_start, dt.time())  # naive UTC
        self.item_created_s = offsets  # seconds since history_start
        self.item_created = np.array(base, dtype="datetime64[us]") + offsets.astype("timedelta64[s]")
        self._history_start = history_start
        self.item_language = rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_WEIGHTS)
        self.item_deleted_day = np.where(
            rng.random(n) < 0.01, rng.integers(0, cfg.n_days, size=n), -1
        )  # day index on which a post gets deleted, -1 = never
        self.n_authors = n_authors

    # -- users -----------------------------------------------------------------------------------------
    def _make_users(self, rng: np.random.Generator) -> None:
        cfg, n = self.config, self.config.n_users
        alpha = np.full(self.n_topics, 0.25)
        self.user_pref = rng.dirichlet(alpha, size=n)
        self.user_language = rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_WEIGHTS)
        self.user_activity = rng.lognormal(0.0, 0.7, size=n)
        # Most users exist before the window; some sign up during it (cold start on their first days).
        signup_day = np.where(
            rng.random(n) < 0.85, -rng.integers(1, 400, size=n), rng.integers(0, cfg.n_days, size=n)
        )
        self.user_signup_day = signup_day
        self.user_signup_s = rng.integers(0, 86400, size=n)

    # -- output ----------------------------------------------------------------------------------------
    @property
    def truth(self) -> WorldTruth:
        return WorldTruth(self.user_pref, self.item_topic, self.item_quality)

    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.config.n_days)]

    def iter_days(self) -> Iterator[WorldDay]:
        """Yield each day's raw partitions in date order (deterministic)."""
        for i, ds in enumerate(self.days()):
            rng = np.random.default_rng([self.config.seed, i])
            started = time.perf_counter()
            day = WorldDay(ds, self._events(i, rng), self._items(i), self._users(i, rng))
            log.info(
                "world %s: %d events, %d items, %d users in %.1fs",
                ds,
                day.events.num_rows,
                day.items.num_rows,
                day.users.num_rows,
                time.perf_counter() - started,
            )
            yield day

    def _day_date(self, i: int) -> dt.date:
        return self.start + dt.timedelta(days=i)

    def _items(self, i: int) -> pa.Table:
        day_start_s = (self._day_date(i) - self._history_start).days * 86400
        if i == 0:
            new = np.flatnonzero(self.item_created_s < day_start_s + 86400)
        else:
            new = np.flatnonzero(
                (self.item_created_s >= day_start_s) & (self.item_created_s < day_start_s + 86400)
            )
        deleted_today = np.flatnonzero(self.item_deleted_day == i)
        deleted_today = deleted_today[self.item_created_s[deleted_today] < day_start_s + 86400]
        idx = np.concatenate([new, np.setdiff1d(deleted_today, new)])
        deleted = (self.item_deleted_day[idx] >= 0) & (self.item_deleted_day[idx] <= i)
        return self._item_rows(idx, deleted, self._day_date(i))

    def _item_text(self, rng: np.random.Generator) -> None:
        """Draw every post's tags and text once, so a post has the same content whichever day it is read."""
        n, per_topic = self.config.n_items, len(TOPIC_TAGS[0])
        order = np.argsort(rng.random((n, per_topic)), axis=1)  # a random permutation of the topic's tags
        n_tags = rng.integers(1, 4, size=n)
        extra = np.where(rng.random(n) < 0.15, rng.integers(0, self.n_topics, size=n), -1)
        self.item_tags = [
            list(dict.fromkeys([TOPIC_TAGS[t][k] for k in perm[:m]] + ([TOPIC_TAGS[x][0]] if x >= 0 else [])))
            for t, perm, m, x in zip(self.item_topic, order, n_tags, extra, strict=True)
        ]
        title_tpl = rng.integers(0, len(TITLE_TEMPLATES), size=n)
        summary_tpl = rng.integers(0, len(SUMMARY_TEMPLATES), size=n)
        spice = rng.integers(0, len(SPICE), size=n)
        self.item_title, self.item_summary = [], []
        for j in range(n):
            words = TOPIC_TAGS[self.item_topic[j]]
            a, b = words[order[j, 0]], words[order[j, 1]]
            title = TITLE_TEMPLATES[title_tpl[j]].format(a=a, b=b)
            self.item_title.append(title[0].upper() + title[1:] + SPICE[spice[j]])
            self.item_summary.append(SUMMARY_TEMPLATES[summary_tpl[j]].format(a=a, b=b))

    def _item_rows(self, idx: np.ndarray, deleted: np.ndarray, day: dt.date) -> pa.Table:
        n = len(idx)
        return pa.table(
            {
                "item_id": [item_id(j) for j in idx],
                "title": [self.item_title[j] for j in idx],
                "summary": [self.item_summary[j] for j in idx],
                "tags": [self.item_tags[j] for j in idx],
                "source": [f"source-{s:03d}" for s in self.item_source[idx]],
                "author": [f"author-{a:05d}" for a in self.item_author[idx]],
                "post_type": [POST_TYPES[(j * 7) % len(POST_TYPES)] for j in idx],
                "content_type": [CONTENT_TYPES[(j * 3) % len(CONTENT_TYPES)] for j in idx],
                "language": [LANGUAGES[k] for k in self.item_language[idx]],
                "url": [f"https://posts.example/{item_id(j)}" for j in idx],
                "created_at": pa.array(self.item_created[idx], type=pa.timestamp("us", tz="UTC")),
                "deleted": pa.array(deleted, type=pa.bool_()),
                PARTITION_COLUMN: pa.array([day] * n, type=pa.date32()),
            },
            schema=RAW_ITEMS,
        )

    def _user_profiles(self, rng: np.random.Generator) -> None:
        """Draw every user's profile once: selected tags from their favourite topics, rare blocks."""
        n, per_topic = self.config.n_users, len(TOPIC_TAGS[0])
        ranked_topics = np.argsort(-self.user_pref, axis=1)
        n_top = rng.integers(1, 4, size=n)
        tag_pick = rng.integers(0, per_topic, size=(n, 3))
        self.user_selected = [
            sorted(
                {TOPIC_TAGS[t][k] for t, k in zip(top[:m], picks[:m], strict=True)} | {TOPIC_TAGS[top[0]][0]}
            )
            for top, m, picks in zip(ranked_topics, n_top, tag_pick, strict=True)
        ]
        disliked = ranked_topics[:, -1]
        block_tag = rng.random(n) < 0.1
        block_tag_pick = rng.integers(0, per_topic, size=n)
        self.user_blocked_tags = [
            [TOPIC_TAGS[d][k]] if b else []
            for d, k, b in zip(disliked, block_tag_pick, block_tag, strict=True)
        ]
        block_source = rng.random(n) < 0.05
        source_pick = rng.integers(0, self.n_sources, size=n)
        self.user_blocked_sources = [
            [f"source-{s:03d}"] if b else [] for s, b in zip(source_pick, block_source, strict=True)
        ]
        self.user_opt_in = rng.random(n) < 0.6
        self.user_weekly = rng.random(n) < 0.7
        self.user_weekday = rng.integers(0, 7, size=n)
        self.user_timezone = rng.integers(0, len(TIMEZONES), size=n)

    def _users(self, i: int, rng: np.random.Generator) -> pa.Table:
        idx = (
            np.flatnonzero(self.user_signup_day <= 0) if i == 0 else np.flatnonzero(self.user_signup_day == i)
        )
        start = np.datetime64(dt.datetime.combine(self.start, dt.time()), "us")
        signup = start + (self.user_signup_day[idx] * 86400 + self.user_signup_s[idx]).astype(
            "timedelta64[s]"
        )
        return pa.table(
            {
                "user_id": [user_id(u) for u in idx],
                "email": [f"reader{u}@example.com" for u in idx],
                "signup_ts": pa.array(signup, pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
                "language": [LANGUAGES[k] for k in self.user_language[idx]],
                "selected_tags": [self.user_selected[u] for u in idx],
                "blocked_tags": [self.user_blocked_tags[u] for u in idx],
                "blocked_sources": [self.user_blocked_sources[u] for u in idx],
                "digest_opt_in": pa.array(self.user_opt_in[idx], pa.bool_()),
                "digest_frequency": [DIGEST_FREQUENCIES[int(w)] for w in self.user_weekly[idx]],
                "digest_weekday": pa.array(self.user_weekday[idx], pa.int64()),
                "timezone": [TIMEZONES[k] for k in self.user_timezone[idx]],
                PARTITION_COLUMN: pa.array([self._day_date(i)] * len(idx), type=pa.date32()),
            },
            schema=RAW_USERS,
        )

    def _events(self, i: int, rng: np.random.Generator) -> pa.Table:
        cfg = self.config
        day = self._day_date(i)
        day_start_s = (day - self._history_start).days * 86400
        live = np.flatnonzero(
            (self.item_created_s < day_start_s + 86400)
            & ~((self.item_deleted_day >= 0) & (self.item_deleted_day < i))
        )
        users = np.flatnonzero(self.user_signup_day <= i)
        p_active = np.clip(
            cfg.daily_active_fraction * self.user_activity[users] / self.user_activity.mean(), 0, 1
        )
        active = users[rng.random(len(users)) < p_active]
        if len(active) == 0 or len(live) == 0:
            return RAW_EVENTS.empty_table()
        per_user = cfg.impressions_per_active_user_day
        u = np.repeat(active, per_user)
        position = np.tile(np.arange(per_user), len(active))
        age_days = np.maximum(0.0, (day_start_s + 43200 - self.item_created_s[live]) / 86400.0)
        appeal = self.item_quality[live] * np.exp(-age_days / 4.0)
        # The logged feed: half fresh-popular, half topic-matched by the user's preference.
        popular = live[_sample(rng, appeal, len(u))]
        topic = _sample_rows(rng, self.user_pref[u])
        matched = self._sample_in_topic(rng, live, appeal, topic)
        item = np.where(rng.random(len(u)) < 0.5, popular, matched)
        # Language: users see their language or English.
        ok_lang = (self.item_language[item] == self.user_language[u]) | (self.item_language[item] == 0)
        u, item, position = u[ok_lang], item[ok_lang], position[ok_lang]
        uniq = np.unique(u.astype(np.int64) * (self.config.n_items + 1) + item, return_index=True)[1]
        u, item, position = u[uniq], item[uniq], position[uniq]
        pref = self.user_pref[u, self.item_topic[item]] * self.n_topics
        item_age = np.maximum(0.0, (day_start_s + 43200 - self.item_created_s[item]) / 86400.0)
        logit = (
            -3.6
            + 1.5 * np.log1p(pref)
            + 0.35 * np.log(self.item_quality[item])
            - 0.12 * item_age
            - 0.04 * position
            + rng.normal(0, 0.4, size=len(u))
        )
        click = rng.random(len(u)) < 1 / (1 + np.exp(-logit))
        ts = day_start_s + rng.integers(0, 86400 - 900, size=len(u))
        kinds = [("impression", np.ones(len(u), bool), 0)]
        kinds.append(("click", click, 5))
        for name, p, lag in (("upvote", 0.30, 120), ("bookmark", 0.15, 180), ("share", 0.05, 240)):
            kinds.append((name, click & (rng.random(len(u)) < p * np.clip(pref, 0.5, 2.0)), lag))
        parts_u, parts_i, parts_t, parts_ts, parts_pos = [], [], [], [], []
        for name, mask, lag in kinds:
            parts_u.append(u[mask])
            parts_i.append(item[mask])
            parts_t.append(np.full(int(mask.sum()), name, dtype=object))
            parts_ts.append(ts[mask] + lag)
            parts_pos.append(position[mask])
        eu, ei, et = np.concatenate(parts_u), np.concatenate(parts_i), np.concatenate(parts_t)
        ets, epos = np.concatenate(parts_ts), np.concatenate(parts_pos)
        order = np.lexsort((ets, eu))
        eu, ei, et, ets, epos = eu[order], ei[order], et[order], ets[order], epos[order]
        event_ids = np.array([f"e{i:04d}-{k:08d}" for k in range(len(eu))], dtype=object)
        users_s = np.array([user_id(x) for x in eu], dtype=object)
        items_s = np.array([item_id(x) for x in ei], dtype=object)
        base = np.datetime64(dt.datetime.combine(self._history_start, dt.time()), "us")
        ts_us = base + ets.astype("timedelta64[s]")
        table = {
            "event_id": event_ids,
            "user_id": users_s,
            "item_id": items_s,
            "event_type": et,
            "event_ts": ts_us,
            "position": epos.astype(np.int64),
        }
        table = self._corrupt(table, rng, day)
        n = len(table["event_id"])
        return pa.table(
            {
                "event_id": pa.array(table["event_id"], type=pa.string()),
                "user_id": pa.array(table["user_id"], type=pa.string()),
                "item_id": pa.array(table["item_id"], type=pa.string()),
                "event_type": pa.array(table["event_type"], type=pa.string()),
                "event_ts": pa.array(table["event_ts"], type=pa.timestamp("us")).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "position": pa.array(table["position"], type=pa.int64()),
                PARTITION_COLUMN: pa.array([day] * n, type=pa.date32()),
            },
            schema=RAW_EVENTS,
        )

    def _sample_in_topic(
        self, rng: np.random.Generator, live: np.ndarray, appeal: np.ndarray, topic: np.ndarray
    ) -> np.ndarray:
        out = np.empty(len(topic), dtype=np.int64)
        live_topic = self.item_topic[live]
        for t in np.unique(topic):
            rows = np.flatnonzero(topic == t)
            pool = np.flatnonzero(live_topic == t)
            if len(pool) == 0:
                out[rows] = live[_sample(rng, appeal, len(rows))]
            else:
                out[rows] = live[pool[_sample(rng, appeal[pool], len(rows))]]
        return out

    def _corrupt(self, table: dict[str, np.ndarray], rng: np.random.Generator, day: dt.date) -> dict:
        """Make ``bad_row_fraction`` of the rows bad in one of the ways real logs go bad."""
        n = len(table["event_id"])
        n_bad = round(n * self.config.bad_row_fraction)
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


def user_id(index: int) -> str:
    return f"u{int(index):07d}"


def item_id(index: int) -> str:
    return f"p{int(index):07d}"


def _pick_in_group(
    rng: np.random.Generator, member_group: np.ndarray, n_groups: int, wanted: np.ndarray, follow: float
) -> np.ndarray:
    """For each entry of ``wanted`` (a group), a random member of that group with probability ``follow``
    (or when the group is empty: any member)."""
    order = np.argsort(member_group, kind="stable")
    counts = np.bincount(member_group, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offset = (rng.random(len(wanted)) * np.maximum(counts[wanted], 1)).astype(np.int64)
    pick = order[np.minimum(starts[wanted] + offset, len(order) - 1)]
    anyone = rng.integers(0, len(member_group), size=len(wanted))
    return np.where((counts[wanted] > 0) & (rng.random(len(wanted)) < follow), pick, anyone)


def _sample(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(weights) - 1)


def _sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(probs, axis=1)
    draws = rng.random((len(probs), 1)) * cdf[:, -1:]
    return np.minimum((cdf < draws).sum(axis=1), probs.shape[1] - 1)


SCALES: dict[str, dict[str, int | float]] = {
    "tiny": {"n_users": 200, "n_items": 300, "n_days": 21, "impressions_per_active_user_day": 10},
    "default": {},
    "medium": {"n_users": 50_000, "n_items": 50_000, "n_days": 28},
    "large": {
        "n_users": 1_000_000,
        "n_items": 1_000_000,
        "n_days": 7,
        "daily_active_fraction": 0.1,
        "impressions_per_active_user_day": 10,
    },
}


def world_config(scale: str, base: WorldConfig) -> WorldConfig:
    """``base`` with the sizes of a named scale (tiny, default, medium, large)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    return base.model_copy(update=SCALES[scale])


def load_world(warehouse: Warehouse, world: World, progress: bool = False) -> dict[str, int]:
    """Load every day of ``world`` into the raw tables (each day replaces its ``ds`` partition).

    Args:
        progress: show a progress bar (for the CLI).

    Returns:
        Rows loaded per raw table.
    """
    from tqdm import tqdm

    totals = {"raw_events": 0, "raw_items": 0, "raw_users": 0}
    days = tqdm(world.iter_days(), total=world.config.n_days, desc="world", unit="day", disable=not progress)
    for day in days:
        for table, rows in (("raw_events", day.events), ("raw_items", day.items), ("raw_users", day.users)):
            totals[table] += warehouse.load_raw(table, rows, day.ds)
    return totals
