"""The recall gate of the item index on clustered items and queries."""

from __future__ import annotations

import pytest

from pipelines.serving.index import build_scann_index
from pipelines.serving.recall import measure_recall
from tests.pipelines.serving.index_data import TREE


def test_tree_ah_reaches_the_recall_floor(clustered_fixture) -> None:
    ids, items, queries = clustered_fixture
    index = build_scann_index(ids, items, TREE, queries)
    # 1.5 * sqrt(3000) = 82.2 -> 82 leaves, ceil(0.1 * 82) = ceil(8.2) = 9 searched.
    assert (index.settings.mode, index.settings.num_leaves, index.settings.leaves_to_search) == (
        "tree_ah",
        82,
        9,
    )
    assert index.recall is not None and index.recall >= 0.95
    assert measure_recall(index, queries, 100) == pytest.approx(index.recall)
