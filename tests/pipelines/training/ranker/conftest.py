"""The ranker trained once per test module on the synthetic ranking world, with its stand-in retrieval."""

from __future__ import annotations

import pytest

from pipelines.training.ranker.train import train_ranker
from tests.pipelines.training.ranker.synthetic_ranking import CONFIG, stand_in_scorer, synthetic_examples


@pytest.fixture(scope="module")
def synthetic():
    rows, retrieval, user_index, item_index = synthetic_examples()
    scorer = stand_in_scorer(retrieval, user_index, item_index)
    return rows, scorer, train_ranker(rows, scorer, CONFIG)
