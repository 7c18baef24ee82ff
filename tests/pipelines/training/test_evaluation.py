"""Scorer evaluation on a tiny hold-out: a perfect scorer, and malformed scores reported."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.evaluation import evaluate_scorer
from pipelines.training.holdout import build_holdout
from pipelines.training.two_tower.features import USER_COLUMNS
from tests.pipelines.training.tiny_holdout import CATALOG, CONFIG, tiny_examples


def test_perfect_scorer_gets_full_recall():
    holdout = build_holdout(tiny_examples(), CATALOG, CONFIG, USER_COLUMNS)
    truth = holdout.truth.toarray()
    metrics = evaluate_scorer(lambda rows: truth[rows].astype(float), holdout, [2])
    # u1 has 2 relevant, u2 1: both fit in the first 2
    assert metrics["recall_at_2"] == 1.0
    assert metrics["ndcg_at_2"] == 1.0


def test_scorer_shape_and_nan_are_reported():
    holdout = build_holdout(tiny_examples(), CATALOG, CONFIG, USER_COLUMNS)
    with pytest.raises(ValueError, match="shape"):
        evaluate_scorer(lambda rows: np.zeros((len(rows), 3)), holdout, [1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scorer(lambda rows: np.full((len(rows), 5), np.nan), holdout, [1])
