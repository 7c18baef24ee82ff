"""A blend of two retrievers: weighted reciprocal rank fusion computed by hand, padding and ties, and the
blended retriever a served system names fusing what its two retrievers retrieve on their own."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.settings import Settings
from pipelines.serving.blend import RRF_K, BlendRetriever, fuse_ranks
from pipelines.serving.retrieval import make_retriever
from pipelines.serving.system import ServedSystem


def test_fusion_sums_weighted_reciprocal_ranks_as_computed_by_hand() -> None:
    first = np.array([[3, 1, 2]])
    second = np.array([[1, 4, -1]])
    positions, scores = fuse_ranks(first, second, 0.25, 3)
    by_hand = {
        1: 0.75 / (RRF_K + 2) + 0.25 / (RRF_K + 1),
        3: 0.75 / (RRF_K + 1),
        2: 0.75 / (RRF_K + 3),
        4: 0.25 / (RRF_K + 2),
    }
    best = sorted(by_hand, key=lambda j: -by_hand[j])[:3]
    assert positions.tolist() == [best] == [[1, 3, 2]]
    np.testing.assert_allclose(scores[0], [by_hand[j] for j in best], rtol=1e-6)
    # With the weight on the second retriever, its posts come first.
    positions, _ = fuse_ranks(first, second, 0.75, 3)
    assert positions.tolist() == [[1, 4, 3]]


def test_fusion_pads_short_lists_and_breaks_ties_by_catalog_position() -> None:
    first = np.array([[5, -1, -1], [-1, -1, -1]])
    second = np.array([[2, -1, -1], [-1, -1, -1]])
    positions, scores = fuse_ranks(first, second, 0.5, 3)
    # Posts 2 and 5 tie (both rank 1 at weight 0.5): the lower position first; the second user has none.
    assert positions.tolist() == [[2, 5, -1], [-1, -1, -1]]
    assert scores[0, 0] == scores[0, 1] and np.isneginf(scores[0, 2]) and np.isneginf(scores[1]).all()


def _interactions() -> pa.Table:
    day = dt.datetime(2026, 11, 20, 12)
    rows = [("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "c"), ("u3", "d"), ("u4", "c")]
    return pa.table(
        {
            "user_id": [u for u, _ in rows],
            "item_id": [i for _, i in rows],
            "event_ts": pa.array([day] * len(rows), pa.timestamp("us")),
            "n_events": [1] * len(rows),
        }
    )


def test_a_blended_system_retrieves_the_fusion_of_its_two_retrievers() -> None:
    items = pa.table({"item_id": ["a", "b", "c", "d", "e"]})
    users = pa.table({"user_id": ["u1", "u2", "u3", "new"]})
    args = (
        None,
        items,
        np.zeros((5, 1), np.float32),
        _interactions(),
        dt.datetime(2026, 11, 21),
        Settings().index,
    )
    knn = ServedSystem("item_knn", None, diversify=False, knn_neighbors=10)
    popular = ServedSystem("most_popular", None, diversify=False, popularity_window_days=7)
    blended = dataclasses.replace(
        knn, blend_retriever="most_popular", blend_weight=0.4, popularity_window_days=7
    )
    retriever = make_retriever(blended, *args)
    assert isinstance(retriever, BlendRetriever) and retriever.weight == 0.4
    parts = [make_retriever(system, *args) for system in (knn, popular)]
    alone = [part.search(part.queries(users), 4)[0] for part in parts]
    positions, scores = retriever.search(retriever.queries(users), 4)
    expected, expected_scores = fuse_ranks(alone[0], alone[1], 0.4, 4)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_array_equal(scores, expected_scores)
    # A user without history gets the popular posts; most popular first: c (3 users), then b.
    assert positions[3, :2].tolist() == [2, 1]


def test_a_blend_is_checked_and_recorded_only_when_there_is_one() -> None:
    base = ServedSystem("two_tower", "tt-1", popularity_prior=1.0)
    assert "blend_retriever" not in base.to_json() and base.retrievers == ("two_tower",)
    blended = dataclasses.replace(base, blend_retriever="als", blend_weight=0.5, als_version="als-1")
    assert ServedSystem.from_json(blended.to_json()) == blended
    assert blended.retrievers == ("two_tower", "als") and "blend als 0.5" in blended.label
    for wrong, message in (
        ({"blend_retriever": "als", "blend_weight": 0.5}, "als_version"),
        ({"blend_retriever": "two_tower", "blend_weight": 0.5}, "another"),
        ({"blend_retriever": "most_popular", "blend_weight": 1.0}, "between 0 and 1"),
        ({"blend_weight": 0.5}, "needs a blend_retriever"),
    ):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(base, **wrong)
