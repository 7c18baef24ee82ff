"""Ranking metrics on inputs small enough to check by hand: top-k, Recall@K, NDCG@K with binary and with
graded gains, average precision and catalog coverage."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.metrics import (
    average_precision,
    catalog_coverage_at_k,
    graded_ndcg_at_k,
    ndcg_at_k,
    recall_at_k,
    top_k_indices,
)


def test_top_k_orders_by_score_and_breaks_ties_by_lower_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 2.0], [0.0, -np.inf, 5.0, 5.0, 1.0]])
    # row 0: 3.0 at columns 1 and 2 (tie -> 1 first), then 2.0 at 4
    # row 1: 5.0 at columns 2 and 3, then 1.0 at 4
    assert top_k_indices(scores, 3).tolist() == [[1, 2, 4], [2, 3, 4]]
    # k larger than the catalog returns the whole catalog, -inf last
    assert top_k_indices(scores, 9)[1].tolist() == [2, 3, 4, 0, 1]


def test_top_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2-D"):
        top_k_indices(np.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_indices(np.zeros((1, 3)), 0)


def test_recall_ndcg_and_coverage_by_hand():
    # user 0: relevant items at ranks 0 and 2, 2 relevant in total
    # user 1: relevant item at rank 1, 3 relevant in total (two never retrieved)
    hits = np.array([[True, False, True], [False, True, False]])
    n_relevant = np.array([2, 3])
    # recall@1 = [1/2, 0/3]; recall@3 = [2/2, 1/3]
    np.testing.assert_allclose(recall_at_k(hits, n_relevant, 1), [0.5, 0.0])
    np.testing.assert_allclose(recall_at_k(hits, n_relevant, 3), [1.0, 1 / 3])
    # ndcg@3 user 0: dcg = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5; idcg (2 relevant) = 1 + 1/log2(3) = 1.6309
    # ndcg@3 user 1: dcg = 1/log2(3) = 0.6309; idcg (min(3, 3) = 3) = 1 + 0.6309 + 0.5 = 2.1309
    np.testing.assert_allclose(
        ndcg_at_k(hits, n_relevant, 3), [1.5 / 1.6309298, 0.6309298 / 2.1309298], rtol=1e-6
    )
    top = np.array([[4, 1, 2], [4, 3, 0]])
    # @1: {4} of 10 items; @3: {0, 1, 2, 3, 4} of 10
    assert catalog_coverage_at_k(top, 1, 10) == 0.1
    assert catalog_coverage_at_k(top, 3, 10) == 0.5


def test_ndcg_and_map_hand_computed():
    # Group 0: rows (label, score) A(3, .1) B(0, .9) C(1, .5) -> order B, C, A; gains 2^l - 1 = 0, 1, 7.
    #   DCG = 0/log2(2) + 1/log2(3) + 7/log2(4) = 0.630930 + 3.5 = 4.130930
    #   ideal A, C, B = 7 + 0.630930 = 7.630930 -> NDCG@10 = 4.130930 / 7.630930 = 0.541340; @1: DCG 0 -> 0.
    # Group 1: (0, .2) (2, .2), a tie keeps row order -> DCG = 3/log2(3) = 1.892789, ideal 3 -> 0.630930.
    labels = np.array([3, 0, 1, 0, 2])
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.2])
    sizes = np.array([3, 2])
    np.testing.assert_allclose(graded_ndcg_at_k(labels, scores, sizes, 10), [0.541340, 0.630930], atol=1e-6)
    np.testing.assert_allclose(graded_ndcg_at_k(labels, scores, sizes, 1), [0.0, 0.0], atol=1e-12)
    # AP, relevant = label > 0. Group 0 order B, C, A: precision at C = 1/2, at A = 2/3 -> 0.583333.
    # Group 1 order (0), (2): precision at the second row = 1/2.
    np.testing.assert_allclose(average_precision(labels, scores, sizes), [0.583333, 0.5], atol=1e-6)


def test_ndcg_with_binary_labels_matches_the_retrieval_metric():
    rng = np.random.default_rng(0)
    labels = (rng.random((6, 12)) < 0.3).astype(int)
    labels[:, 0] = 1
    scores = rng.random((6, 12))
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(labels, order, axis=1).astype(bool)
    expected = ndcg_at_k(hits, labels.sum(axis=1), 5)
    got = graded_ndcg_at_k(labels.ravel(), scores.ravel(), np.full(6, 12), 5)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_ndcg_refuses_a_group_without_positive():
    with pytest.raises(ValueError, match="group 1 has no positive label"):
        graded_ndcg_at_k(np.array([1, 0, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4]), np.array([2, 2]), 10)
