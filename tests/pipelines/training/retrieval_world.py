"""A tiny deterministic world in the retrieval-examples contract, for two-tower and evaluation tests.

Users have hidden topic preferences (one or two favourite topics) and usually select tags of those topics;
posts belong to one topic, visible through their tags, title words, source and author; each post has a
popularity weight and loses appeal with age. Engagements are sampled from preference x popularity x
freshness, so a model that learns topics clearly beats a popularity list, and popularity alone is not
useless. A few posts are published inside the eval window, so the eval catalog holds ids never trained on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.training.two_tower.features import ITEM_COLUMNS

DAY = dt.timedelta(days=1)
STRINGS = pa.list_(pa.string())
TS = pa.timestamp("us", tz="UTC")
EXAMPLE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("event_ts", TS),
        ("ds", pa.date32()),
        ("split", pa.string()),
        ("history", STRINGS),
        ("selected_tags", STRINGS),
        ("account_age_days", pa.float64()),
        ("activity_lookback", pa.int64()),
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("summary", pa.string()),
        ("tags", STRINGS),
        ("source", pa.string()),
        ("author", pa.string()),
        ("post_type", pa.string()),
        ("content_type", pa.string()),
        ("language", pa.string()),
        ("item_age_days", pa.float64()),
    ]
)


@dataclass(frozen=True)
class RetrievalWorld:
    examples: pa.Table
    catalog: pa.Table
    users_at_eval: pa.Table
    eval_start: dt.datetime
    item_topic: np.ndarray
    topic_tags: list[list[str]]


def topic_tags(n_topics: int) -> list[list[str]]:
    return [[f"topic{t}-tag{j}" for j in range(3)] for t in range(n_topics)]


def make_world(
    n_users: int = 200,
    n_items: int = 240,
    n_topics: int = 6,
    n_days: int = 14,
    eval_days: int = 3,
    events_per_user: int = 24,
    seed: int = 0,
) -> RetrievalWorld:
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    eval_start = start + (n_days - eval_days) * DAY
    end = start + n_days * DAY
    tags_by_topic = topic_tags(n_topics)

    item_topic = rng.permutation(np.arange(n_items) % n_topics)
    popularity = rng.lognormal(0.0, 1.0, size=n_items)
    # Most posts exist before the data starts; 8% appear during the window, some inside the eval days.
    created = np.array(
        [
            start - rng.uniform(0, 12) * DAY
            if rng.random() > 0.08
            else start + rng.uniform(0, n_days - 0.5) * DAY
            for _ in range(n_items)
        ]
    )
    items = []
    for i in range(n_items):
        t = int(item_topic[i])
        tags = list(rng.choice(tags_by_topic[t], size=2, replace=False))
        if rng.random() < 0.3:
            tags.append(tags_by_topic[int(rng.integers(n_topics))][int(rng.integers(3))])
        words = [f"word{t}x{int(w)}" for w in rng.integers(0, 6, size=3)]
        items.append(
            {
                "item_id": f"p{i:04d}",
                "title": f"How {words[0]} meets {words[1]}",
                "summary": f"A look at {words[2]} and {words[0]} in practice.",
                "tags": tags,
                "source": f"source{t}-{int(rng.integers(2))}" if rng.random() > 0.1 else "source-misc",
                "author": f"author{t}-{int(rng.integers(4))}",
                "post_type": ["article", "tutorial", "release", "discussion", "video"][int(rng.integers(5))],
                "content_type": ["text", "video", "podcast", "repository"][int(rng.integers(4))],
                "language": "en" if rng.random() > 0.1 else "de",
            }
        )

    pref = np.full((n_users, n_topics), 0.02)
    selected: list[list[str]] = []
    for u in range(n_users):
        favourites = rng.choice(n_topics, size=1 + int(rng.random() < 0.4), replace=False)
        pref[u, favourites] = rng.dirichlet(np.ones(len(favourites)))
        chosen = [] if rng.random() < 0.15 else [str(rng.choice(tags_by_topic[int(favourites[0])]))]
        selected.append(chosen)
    signup = [start - rng.uniform(5, 400) * DAY for _ in range(n_users)]

    rows = []
    for u in range(n_users):
        n_events = max(4, int(rng.poisson(events_per_user)))
        times = sorted(start + rng.uniform(0, n_days) * DAY for _ in range(n_events))
        engaged: list[int] = []
        engaged_at: list[dt.datetime] = []
        for ts in times:
            age_days = np.array([(ts - c) / DAY for c in created])
            weights = pref[u, item_topic] * popularity * np.exp(-np.maximum(age_days, 0) / 10.0)
            weights[age_days < 0] = 0.0
            weights[engaged] = 0.0
            item = int(rng.choice(n_items, p=weights / weights.sum()))
            history = [f"p{i:04d}" for i in reversed(engaged[-20:])]
            activity = sum(1 for e in engaged_at if ts - e <= 30 * DAY)
            rows.append(
                {
                    "user_id": f"u{u:04d}",
                    "event_ts": ts,
                    "ds": ts.date(),
                    "split": "eval" if ts >= eval_start else "train",
                    "history": history,
                    "selected_tags": selected[u],
                    "account_age_days": (ts - signup[u]) / DAY,
                    "activity_lookback": activity,
                    **items[item],
                    "item_age_days": float(age_days[item]),
                }
            )
            engaged.append(item)
            engaged_at.append(ts)
    examples = pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA)

    catalog_rows = [
        {**items[i], "item_age_days": max(0.0, (eval_start - created[i]) / DAY)}
        for i in range(n_items)
        if created[i] < end
    ]
    catalog = pa.Table.from_pylist(catalog_rows, schema=_sub_schema(ITEM_COLUMNS))

    users = []
    for u in range(n_users):
        before = [r for r in rows if r["user_id"] == f"u{u:04d}" and r["event_ts"] < eval_start]
        users.append(
            {
                "user_id": f"u{u:04d}",
                "history": [r["item_id"] for r in reversed(before[-20:])],
                "selected_tags": selected[u],
                "account_age_days": (eval_start - signup[u]) / DAY,
                "activity_lookback": len(before),
            }
        )
    users_at_eval = pa.Table.from_pylist(
        users,
        schema=_sub_schema(("user_id", "history", "selected_tags", "account_age_days", "activity_lookback")),
    )
    return RetrievalWorld(examples, catalog, users_at_eval, eval_start, item_topic, tags_by_topic)


def _sub_schema(names: tuple[str, ...]) -> pa.Schema:
    return pa.schema([EXAMPLE_SCHEMA.field(n) for n in names])
