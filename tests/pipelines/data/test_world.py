"""The synthetic world: deterministic, learnable structure, and the bad rows it promises."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.schema import RAW_EVENTS, RAW_ITEMS, RAW_USERS
from pipelines.core.settings import WorldConfig
from pipelines.data.world import World, world_config

CONFIG = world_config("tiny", WorldConfig())


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
