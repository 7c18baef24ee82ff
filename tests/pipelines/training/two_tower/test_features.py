"""Raw two-tower inputs: the per-user cap on examples, padded user features and bad rows named."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest

from pipelines.training.two_tower.features import cap_examples_per_user, user_features
from tests.pipelines.training.two_tower.fast import FAST


def test_cap_keeps_the_most_recent_examples_per_user():
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u1", "u1"],
            "event_ts": pa.array([t0, t0, t0 + dt.timedelta(hours=2), t0 + dt.timedelta(hours=1)]),
            "item_id": ["a", "b", "c", "d"],
        }
    )
    kept = cap_examples_per_user(table, 2)
    # u1's latest two are c (+2h) and d (+1h); u2 has one
    assert kept.column("item_id").to_pylist() == ["c", "d", "b"]


def test_capped_examples_do_not_depend_on_the_order_the_warehouse_returned():
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    # u1 engaged with three posts in the same second: the tie breaks by post id.
    table = pa.table(
        {
            "user_id": ["u1", "u1", "u2", "u1"],
            "event_ts": pa.array([t0, t0, t0, t0]),
            "item_id": ["z", "a", "b", "m"],
        }
    )
    kept = cap_examples_per_user(table, 2)
    assert kept.column("item_id").to_pylist() == ["a", "m", "b"]
    for order in ([3, 2, 1, 0], [1, 3, 0, 2]):
        assert cap_examples_per_user(table.take(order), 2).equals(kept)


def test_user_features_pad_lists_and_name_bad_rows():
    users = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "history": pa.array([["a", "b", "c"], [], None], pa.list_(pa.string())),
            "selected_tags": pa.array([[], [], []]),  # list<null>, as built from Python
            "account_age_days": [1.0, 2.0, 3.0],
            "activity_lookback": [0, 1, 2],
        }
    )
    config = FAST.model_copy(update={"history_length": 2})
    features = user_features(users, config)
    assert features["history"].tolist() == [["a", "b"], ["", ""], ["", ""]]
    assert features["selected_tags"].shape == (3, config.max_tags)
    with pytest.raises(ValueError, match="users row 1: user_id is null"):
        user_features(users.set_column(0, "user_id", pa.array(["u1", None, "u3"])), config)
    with pytest.raises(ValueError, match="users row 2: account_age_days is not finite"):
        user_features(users.set_column(3, "account_age_days", pa.array([1.0, 2.0, math.inf])), config)
    with pytest.raises(ValueError, match=r"lacks columns \['activity_lookback'\]"):
        user_features(users.drop_columns(["activity_lookback"]), config)
