"""The ranker trained once per test module on the synthetic ranking world, with its stand-in retrieval."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.ranker.train import train_ranker
from tests.pipelines.training.ranker.synthetic_ranking import CONFIG, synthetic_examples


def _stand_in(retrieval: np.ndarray, user_index: dict[str, int], item_index: dict[str, int]):
    # Rank of every item within the user's whole-catalog order, capped at depth + 1.
    order = np.argsort(-retrieval, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, retrieval.shape[1] + 1)[None, :], axis=1)
    rank = np.minimum(rank, CONFIG.retrieval_depth + 1)

    def scores(user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.array([user_index[x] for x in user_ids])
        i = np.array([item_index[x] for x in item_ids])
        return retrieval[u, i], rank[u, i]

    return scores


@pytest.fixture(scope="module")
def synthetic():
    rows, retrieval, user_index, item_index = synthetic_examples()
    scorer = _stand_in(retrieval, user_index, item_index)
    return rows, scorer, train_ranker(rows, scorer, CONFIG)
