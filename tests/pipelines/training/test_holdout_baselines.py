"""The most-popular and item-kNN baselines, scored by hand on a tiny hold-out."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.evaluation import evaluate_scorer
from pipelines.training.holdout import build_holdout
from pipelines.training.holdout_baselines import item_knn_scorer, popularity_scorer
from pipelines.training.two_tower.features import USER_COLUMNS
from tests.pipelines.training.tiny_holdout import CATALOG, CONFIG, tiny_examples


def test_most_popular_metrics_by_hand():
    holdout = build_holdout(tiny_examples(), CATALOG, CONFIG, USER_COLUMNS)
    metrics = evaluate_scorer(popularity_scorer(holdout), holdout, CONFIG.ks)
    # u1: a, b seen; popularity c=1, d=0, e=0 -> ranking c, d, e; truth {c, d} -> hits at ranks 0, 1
    # u2: a, c seen; popularity b=2, d=0, e=0 -> ranking b, d, e; truth {e} -> hit at rank 2
    # recall@1 = (1/2 + 0) / 2; recall@2 = (2/2 + 0) / 2; recall@3 = (1 + 1) / 2
    assert metrics["recall_at_1"] == pytest.approx(0.25)
    assert metrics["recall_at_2"] == pytest.approx(0.5)
    assert metrics["recall_at_3"] == pytest.approx(1.0)
    # ndcg@3: u1 perfect (1.0); u2 dcg = 1/log2(4) = 0.5, idcg = 1 -> 0.5; mean 0.75
    assert metrics["ndcg_at_3"] == pytest.approx(0.75)
    # coverage@1: {c, b} of 5; @2: {c, d, b} of 5
    assert metrics["coverage_at_1"] == pytest.approx(0.4)
    assert metrics["coverage_at_2"] == pytest.approx(0.6)
    assert metrics["n_users"] == 2


def test_item_knn_scores_by_hand():
    holdout = build_holdout(tiny_examples(), CATALOG, CONFIG, USER_COLUMNS)
    # training matrix: u1 {a, b}, u2 {a, c}, u3 {b}; item users: a {u1, u2}, b {u1, u3}, c {u2}
    # cos(a, b) = 1 / sqrt(2 * 2) = 0.5; cos(a, c) = 1 / sqrt(2 * 1) = 0.7071; cos(b, c) = 0
    # u1 saw {a, b}: a = cos(b, a) = 0.5, b = cos(a, b) = 0.5, c = cos(a, c) + cos(b, c) = 0.7071
    # u2 saw {a, c}: a = cos(c, a) = 0.7071, b = cos(a, b) = 0.5, c = cos(a, c) = 0.7071
    # plus a popularity tie-break below 1e-3 of the smallest similarity
    scores = item_knn_scorer(holdout, neighbors=10)(np.array([0, 1]))
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.7071, 0, 0], [0.7071, 0.5, 0.7071, 0, 0]], atol=1e-3)
    # keeping one neighbour per item: a -> c (0.7071), b -> a (0.5), c -> a (0.7071)
    # u1 {a, b}: a = 0.5 (from b), b = 0 (a's neighbour is c), c = 0.7071
    pruned = item_knn_scorer(holdout, neighbors=1)(np.array([0]))
    np.testing.assert_allclose(pruned, [[0.5, 0.0, 0.7071, 0, 0]], atol=1e-3)
