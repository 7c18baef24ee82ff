"""The synthetic world: deterministic, learnable structure, the bad rows it promises, and in every regime
the signal that drives engagement (measured on the raw events, not on any model)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.core.schema import EVENT_TYPES, RAW_EVENTS, RAW_ITEMS, RAW_USERS
from pipelines.core.settings import WorldConfig, WorldRegime
from pipelines.data.world import World, world_config

CONFIG = world_config("tiny", WorldConfig())
END = dt.date(2026, 11, 22)
REGIMES: tuple[str, ...] = get_args(WorldRegime)


def _events(world: World) -> pa.Table:
    return pa.concat_tables(day.events for day in world.iter_days())


def test_same_seed_same_world_other_seed_other_world() -> None:
    a = _events(World(CONFIG, dt.date(2026, 11, 22)))
    b = _events(World(CONFIG, dt.date(2026, 11, 22)))
    c = _events(World(CONFIG.model_copy(update={"seed": 8}), dt.date(2026, 11, 22)))
    assert a.equals(b)
    assert not a.equals(c)


def test_partitions_follow_the_schemas_and_the_calendar() -> None:
    world = World(CONFIG, dt.date(2026, 11, 22))
    days = list(world.iter_days())
    assert [d.ds for d in days][-1] == dt.date(2026, 11, 22) and len(days) == CONFIG.n_days
    for d in days:
        assert d.events.schema.equals(RAW_EVENTS) and d.items.schema.equals(RAW_ITEMS)
        assert d.users.schema.equals(RAW_USERS)
        assert set(d.events.column("ds").to_pylist()) <= {d.events.column("ds")[0].as_py()}


def test_clicks_follow_hidden_preferences() -> None:
    """Users click posts of their preferred topics far more often than other shown posts."""
    world = World(CONFIG, dt.date(2026, 11, 22))
    events = _events(world).filter(pc.is_valid(pc.field("user_id")))
    users = np.array([int(u[1:]) for u in events.column("user_id").to_pylist()])
    items = np.array([int(i[1:]) if i.startswith("p0") else -1 for i in events.column("item_id").to_pylist()])
    kinds = np.array(events.column("event_type").to_pylist())
    ok = items >= 0
    pref = np.zeros(len(users))
    pref[ok] = world.truth.user_topic_pref[users[ok], world.truth.item_topic[items[ok]]]
    shown, clicked = (kinds == "impression") & ok, (kinds == "click") & ok
    liked = pref > 1.5 / world.n_topics
    ctr_liked = clicked[liked].sum() / shown[liked].sum()
    ctr_other = clicked[~liked].sum() / shown[~liked].sum()
    assert ctr_liked > 2 * ctr_other


def test_bad_rows_are_injected_at_the_configured_rate() -> None:
    config = CONFIG.model_copy(update={"bad_row_fraction": 0.01})
    events = _events(World(config, dt.date(2026, 11, 22)))
    null_users = events.column("user_id").null_count
    misspelled = pc.sum(pc.equal(events.column("event_type"), "clik")).as_py()
    # Five kinds of bad rows share the 1%: about 0.2% each.
    assert 0.001 < null_users / events.num_rows < 0.004
    assert 0.001 < misspelled / events.num_rows < 0.004


# -- regimes ------------------------------------------------------------------------------------------


def _digest(table: pa.Table) -> str:
    text = json.dumps(table.to_pylist(), default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_default_regime_still_makes_the_same_first_day() -> None:
    """The default regime is the world as it was before regimes existed (digests of that world)."""
    day = next(World(CONFIG, END).iter_days())
    assert (_digest(day.events), _digest(day.items), _digest(day.users)) == (
        "6ca225ff9dac309e",
        "486d3cffd1bc84c0",
        "a6f4f395be8b2e2a",
    )


@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_is_deterministic_for_a_seed(regime: str) -> None:
    config = world_config("tiny", WorldConfig(), regime).model_copy(update={"n_days": 6})

    def tables(seed: int) -> list[pa.Table]:
        days = list(World(config.model_copy(update={"seed": seed}), END).iter_days())
        return [pa.concat_tables(getattr(d, name) for d in days) for name in ("events", "items", "users")]

    a, b, c = tables(7), tables(7), tables(8)
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))
    assert not a[0].equals(c[0])


@dataclass(frozen=True)
class Log:
    """The well-formed events of a tiny world of one regime, as index arrays (one entry per event)."""

    world: World
    days: list
    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    ts: np.ndarray  # seconds since the epoch
    created: np.ndarray  # creation time of the event's post, seconds since the epoch
    position: pa.ChunkedArray

    @property
    def day(self) -> np.ndarray:
        return self.ts // 86400

    def of(self, *kinds: str) -> np.ndarray:
        return np.isin(self.kind, kinds)

    def topic_liked(self) -> np.ndarray:
        """Whether the user prefers the post's topic (more than 1.5 times an even share)."""
        truth = self.world.truth
        return truth.user_topic_pref[self.user, truth.item_topic[self.item]] > 1.5 / self.world.n_topics

    def lift(self, group: np.ndarray) -> float:
        """Click-through rate of impressions inside ``group`` over that of the others."""
        shown, clicked = self.of("impression"), self.of("click")
        inside = (clicked & group).sum() / (shown & group).sum()
        return inside / ((clicked & ~group).sum() / (shown & ~group).sum())

    def share_of_top(self, fraction: float) -> float:
        """Share of the clicks on the most clicked ``fraction`` of the posts."""
        counts = np.sort(np.bincount(self.item[self.of("click")]))[::-1]
        return counts[: max(1, round(fraction * self.world.config.n_items))].sum() / counts.sum()


def _seconds(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy()


@functools.cache
def _log(regime: str) -> Log:
    world = World(world_config("tiny", WorldConfig(), regime), END)
    days = list(world.iter_days())
    events = pa.concat_tables(d.events for d in days)
    items = pa.concat_tables(d.items for d in days)
    events = events.filter(_well_formed(events))
    created = np.zeros(world.config.n_items, np.int64)
    created[[int(x[1:]) for x in items["item_id"].to_pylist()]] = _seconds(items["created_at"])
    item = np.array([int(x[1:]) for x in events["item_id"].to_pylist()])
    return Log(
        world=world,
        days=days,
        user=np.array([int(x[1:]) for x in events["user_id"].to_pylist()]),
        item=item,
        kind=np.array(events["event_type"].to_pylist()),
        ts=_seconds(events["event_ts"]),
        created=created[item],
        position=events["position"],
    )


def _well_formed(events: pa.Table) -> pa.ChunkedArray:
    """Rows with a user, a known post, a known event type and a time on their day (duplicates kept)."""
    on_its_day = pc.equal(
        pc.cast(pc.floor_temporal(events["event_ts"], unit="day"), pa.date32()), events["ds"]
    )
    return pc.and_(
        pc.and_(pc.is_valid(events["user_id"]), pc.starts_with(events["item_id"], "p0")),
        pc.and_(pc.is_in(events["event_type"], pa.array(EVENT_TYPES)), on_its_day),
    )


@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_keeps_bad_rows_user_profiles_and_signups(regime: str) -> None:
    log, fraction = _log(regime), CONFIG.bad_row_fraction
    bad_rows, rows = [], []
    for d in log.days:
        events = d.events
        ids = events["event_id"].to_pylist()
        duplicates = len(ids) - len(set(ids))
        bad = events.num_rows - events.filter(_well_formed(events)).num_rows + duplicates
        assert bad == round((events.num_rows - duplicates) * fraction)  # the share of every day, rounded
        bad_rows.append(bad)
        rows.append(events.num_rows)
    if sum(rows) / len(rows) > 0.5 / fraction:  # days big enough to carry bad rows
        assert 0.5 * fraction < sum(bad_rows) / sum(rows) < 1.5 * fraction
    users = pa.concat_tables(d.users for d in log.days)
    assert users.num_rows == log.world.config.n_users
    assert all(tags for tags in users["selected_tags"].to_pylist())
    assert any(users["blocked_tags"].to_pylist()) and len(set(users["language"].to_pylist())) > 1
    signed_up_later = sum(d.users.num_rows for d in log.days[1:])
    assert signed_up_later > 0.05 * log.world.config.n_users


def test_popularity_a_few_recent_hits_take_most_engagement_whoever_the_user() -> None:
    log, default = _log("popularity"), _log("default")
    assert log.share_of_top(0.01) > max(0.2, 2 * default.share_of_top(0.01))
    # Yesterday's hits are today's: the top 1% of the last three days' posts take much of each day.
    clicks = log.of("click")
    day, item = log.day[clicks], log.item[clicks]
    hits = []
    for d in np.unique(day)[3:]:
        recent = np.bincount(item[(day < d) & (day >= d - 3)], minlength=log.world.config.n_items)
        top = np.argsort(-recent)[: max(1, log.world.config.n_items // 100)]
        hits.append(np.isin(item[day == d], top))
    assert np.concatenate(hits).mean() > 0.3
    assert log.lift(log.topic_liked()) < 1.3  # preference barely matters


def test_collaborative_engagement_stays_in_invisible_communities() -> None:
    log = _log("collaborative")
    truth, clicks = log.world.truth, log.of("click")
    same = truth.user_community[log.user] == truth.item_community[log.item]
    assert same[clicks].mean() > 0.7 and log.lift(same) > 5
    assert log.lift(log.topic_liked()) < 1.3  # topic preference predicts nothing
    # The topics of a community's engaged posts are no further from the overall mix than with the posts'
    # topics shuffled: a post's topic (its tags, title, source) says nothing about its community.
    community, topic = truth.user_community[log.user[clicks]], truth.item_topic
    item = log.item[clicks]

    def distance(topics: np.ndarray) -> float:
        counts = np.zeros((community.max() + 1, topics.max() + 1))
        np.add.at(counts, (community, topics[item]), 1)
        overall = counts.sum(axis=0) / counts.sum()
        return 0.5 * np.abs(counts / counts.sum(axis=1, keepdims=True) - overall).sum(axis=1).mean()

    rng = np.random.default_rng(0)
    shuffled = np.mean([distance(rng.permutation(topic)) for _ in range(20)])
    assert distance(topic) < 1.5 * shuffled
    # The same measure sees the communities themselves at once.
    posts = truth.item_community
    assert distance(posts) > 1.8 * np.mean([distance(rng.permutation(posts)) for _ in range(20)])


def test_content_topic_match_on_posts_nobody_engaged_with_before() -> None:
    log = _log("content")
    clicks = log.of("click")
    first_day: dict[int, int] = {}
    for d, i in sorted(zip(log.day[clicks], log.item[clicks], strict=True)):
        first_day.setdefault(i, d)
    fresh = np.array([first_day[i] == d for d, i in zip(log.day[clicks], log.item[clicks], strict=True)])
    assert fresh.mean() > 0.6  # most engagement is on posts without engagement on an earlier day
    assert log.lift(log.topic_liked()) > 5 and log.topic_liked()[clicks].mean() > 0.8


def test_freshness_engagement_is_on_posts_younger_than_a_day() -> None:
    log = _log("freshness")
    clicks = log.of("click")
    age_days = (log.ts[clicks] - log.created[clicks]) / 86400
    assert (age_days >= 0).all() and np.median(age_days) < 0.6 and (age_days < 1).mean() > 0.75
    assert log.lift(log.topic_liked()) < 1.6 and log.share_of_top(0.01) < 0.15


def test_ratings_a_long_sparse_log_of_ratings_without_impressions() -> None:
    log = _log("ratings")
    truth = log.world.truth
    assert set(log.kind) == {"click", "upvote"} and log.position.null_count == len(log.position)
    assert log.world.config.n_days >= 180
    active_days = np.unique(log.day)
    assert log.world.config.n_days - len(active_days) >= 0.1 * log.world.config.n_days  # quiet days
    spans = [np.ptp(log.day[log.user == u]) for u in np.unique(log.user)]
    assert np.median(spans) > 30  # histories over many days
    clicks = log.of("click")
    assert np.median((log.ts[clicks] - log.created[clicks]) / 86400) > 30  # posts do not age out
    assert log.share_of_top(0.1) > 0.35  # heavy-tailed popularity
    taste = np.einsum("ij,ij->i", truth.user_factors[log.user], truth.item_factors[log.item])
    upvoted = set(zip(log.user[log.of("upvote")], log.item[log.of("upvote")], strict=True))
    high = np.array([pair in upvoted for pair in zip(log.user[clicks], log.item[clicks], strict=True)])
    assert taste[clicks][high].mean() - taste[clicks][~high].mean() > 0.5  # stars follow latent taste
