"""A hold-out small enough to check by hand: five posts, three users, an eval window starting on day 8."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from pipelines.core.settings import EvaluationConfig

STRINGS = pa.list_(pa.string())

DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _example(user: str, item: str, day: int, split: str, history: list[str]) -> dict:
    ts = DAY0 + dt.timedelta(days=day, hours=12)
    return {
        "user_id": user,
        "item_id": item,
        "event_ts": ts,
        "ds": ts.date(),
        "split": split,
        "history": history,
        "selected_tags": [],
        "account_age_days": 100.0,
        "activity_lookback": len(history),
    }


def tiny_examples() -> pa.Table:
    # catalog a..e; eval window starts on day 8
    rows = [
        _example("u1", "a", 1, "train", []),
        _example("u1", "b", 5, "train", ["a"]),
        _example("u2", "a", 5, "train", []),
        _example("u2", "c", 6, "train", ["a"]),
        _example("u3", "b", 6, "train", []),
        _example("u1", "c", 8, "eval", ["b", "a"]),
        _example("u1", "d", 9, "eval", ["c", "b", "a"]),
        _example("u2", "a", 8, "eval", ["c", "a"]),  # already seen: does not count
        _example("u2", "e", 9, "eval", ["a", "c", "a"]),
        _example("u3", "z", 8, "eval", ["b"]),  # not in the catalog: does not count
    ]
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_ts", pa.timestamp("us", tz="UTC")),
            ("ds", pa.date32()),
            ("split", pa.string()),
            ("history", STRINGS),
            ("selected_tags", STRINGS),
            ("account_age_days", pa.float64()),
            ("activity_lookback", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


CATALOG = pa.table({"item_id": ["a", "b", "c", "d", "e"]})

CONFIG = EvaluationConfig(ks=[1, 2, 3], popularity_window_days=3, max_eval_users=10, knn_neighbors=10)
