"""The hold-out: ground truth, seen posts, popularity and the query state, on a tiny fixture."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from pipelines.training.holdout import build_holdout
from pipelines.training.two_tower.features import USER_COLUMNS
from tests.pipelines.training.tiny_holdout import CATALOG, CONFIG, DAY0, STRINGS, tiny_examples


def test_holdout_truth_seen_and_popularity():
    holdout = build_holdout(tiny_examples(), CATALOG, CONFIG, USER_COLUMNS)
    assert holdout.eval_start == DAY0 + dt.timedelta(days=8)  # midnight of the first eval ds
    # u3's only eval engagement is outside the catalog, so u3 has no ground truth and is left out
    assert holdout.users.column("user_id").to_pylist() == ["u1", "u2"]
    assert holdout.truth.toarray().tolist() == [[0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    assert holdout.seen.toarray().tolist() == [[1, 1, 0, 0, 0], [1, 0, 1, 0, 0]]
    # 5 distinct eval (user, item) pairs, 3 count: u2-a was seen, u3-z is not in the catalog
    assert holdout.dropped_truth == 2
    # window = days 5..7: a once (u2), b twice (u1, u3), c once (u2); a on day 1 is too old
    assert holdout.popularity.tolist() == [1, 2, 1, 0, 0]
    # the query state is the first eval example's: u1 had engaged with b then a
    assert holdout.users.column("history").to_pylist()[0] == ["b", "a"]


def test_explicit_user_state_and_sampling_of_eval_users():
    users = pa.Table.from_pylist(
        [
            {
                "user_id": "u2",
                "history": ["c", "a"],
                "selected_tags": [],
                "account_age_days": 1.0,
                "activity_lookback": 2,
            },
            {
                "user_id": "u1",
                "history": ["b"],
                "selected_tags": ["x"],
                "account_age_days": 2.0,
                "activity_lookback": 2,
            },
        ],
        schema=pa.schema(
            [
                ("user_id", pa.string()),
                ("history", STRINGS),
                ("selected_tags", STRINGS),
                ("account_age_days", pa.float64()),
                ("activity_lookback", pa.int64()),
            ]
        ),
    )
    holdout = build_holdout(tiny_examples(), CATALOG, CONFIG, USER_COLUMNS, users=users)
    # rows follow sorted user ids, each with its given state
    assert holdout.users.column("selected_tags").to_pylist() == [["x"], []]


def test_bad_inputs_name_the_problem():
    examples = tiny_examples()
    with pytest.raises(ValueError, match=r"lacks columns \['split'\]"):
        build_holdout(examples.drop_columns(["split"]), CATALOG, CONFIG, USER_COLUMNS)
    bad_split = examples.set_column(4, "split", pa.array(["train"] * 9 + ["test"]))
    with pytest.raises(ValueError, match="row 9: split"):
        build_holdout(bad_split, CATALOG, CONFIG, USER_COLUMNS)
    with pytest.raises(ValueError, match="no rows with split == 'eval'"):
        build_holdout(examples.slice(0, 5), CATALOG, CONFIG, USER_COLUMNS)
    with pytest.raises(ValueError, match="unique"):
        build_holdout(examples, pa.table({"item_id": ["a", "a"]}), CONFIG, USER_COLUMNS)
