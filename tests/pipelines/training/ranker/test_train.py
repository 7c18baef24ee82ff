"""Lambdarank training and hold-out evaluation of the ranker on the synthetic ranking world."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.training.ranker.train import evaluate_ranker, train_ranker
from tests.pipelines.training.ranker.synthetic_ranking import CONFIG, synthetic_examples


def test_ranker_beats_retrieval_only_order(synthetic):
    _, _, result = synthetic
    m = result.metrics
    assert m["ndcg_at_10"] > m["retrieval_ndcg_at_10"] + 0.03, m
    assert m["map"] > m["retrieval_map"], m
    assert m["ndcg_at_10_lift"] == pytest.approx(m["ndcg_at_10"] - m["retrieval_ndcg_at_10"])
    # Ranker-only signals the stand-in retrieval score lacks carry weight.
    assert result.importance["ctr_short"] > 0 and result.importance["item_age_days"] > 0


def test_training_is_deterministic_and_array_input_matches_callable(synthetic):
    rows, scorer, result = synthetic
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    again = train_ranker(rows, np.column_stack([score, rank]), CONFIG)
    assert again.ranker.booster.model_to_string() == result.ranker.booster.model_to_string()
    assert {k: v for k, v in again.metrics.items() if k != "fit_seconds"} == {
        k: v for k, v in result.metrics.items() if k != "fit_seconds"
    }


def test_groups_without_positive_are_dropped_and_counted():
    # train: (d1, u1) labels 1, 0 | (d1, u2) 0, 0 (dropped) | (d2, u1) 0, 2
    # eval:  (d3, u1) 1, 0, 0 | (d3, u2) 0, 0 (dropped)
    rows, _, _, _ = synthetic_examples()
    pick = rows.slice(0, 11)
    d1, d2, d3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
    pick = pick.set_column(
        0, "user_id", pa.array(["u1", "u1", "u2", "u2", "u1", "u1", "u1", "u1", "u1", "u2", "u2"])
    )
    pick = pick.set_column(2, "ds", pa.array([d1, d1, d1, d1, d2, d2, d3, d3, d3, d3, d3], pa.date32()))
    pick = pick.set_column(4, "label", pa.array([1, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0], pa.int32()))
    pick = pick.set_column(5, "split", pa.array(["train"] * 6 + ["eval"] * 5))
    retrieval = np.column_stack([np.linspace(1, 0, 11), np.arange(1, 12)])
    result = train_ranker(pick, retrieval, CONFIG.model_copy(update={"min_data_in_leaf": 1}))
    m = result.metrics
    assert (m["train_rows"], m["train_groups"], m["train_groups_without_positive"]) == (4, 2, 1)
    assert (m["eval_rows"], m["eval_groups"], m["eval_groups_without_positive"]) == (3, 1, 1)
    # One eval group, relevant row (score 1 - 6/10 = 0.4) first in retrieval order.
    assert m["retrieval_ndcg_at_10"] == pytest.approx(1.0)


def test_bad_label_and_bad_rank_name_the_row(synthetic):
    rows, scorer, _ = synthetic
    labels = rows.column("label").to_numpy().copy()
    labels[7] = 9
    bad = rows.set_column(rows.schema.get_field_index("label"), "label", pa.array(labels, pa.int32()))
    with pytest.raises(ValueError, match=r"ranking example row 7: label must be 0..4, got 9"):
        train_ranker(bad, scorer, CONFIG)
    # Rank 52 is beyond depth 50 + 1; the message names the first row that training would use.
    retrieval = np.column_stack([np.zeros(rows.num_rows), np.full(rows.num_rows, CONFIG.retrieval_depth + 2)])
    with pytest.raises(ValueError, match=r"retrieval rank given for ranking example row \d+ is 52.0"):
        train_ranker(rows, retrieval, CONFIG)
    with pytest.raises(ValueError, match=r"must be \(n_rows, 2\)"):
        train_ranker(rows, np.zeros((3, 2)), CONFIG)


def test_champion_evaluated_on_the_same_holdout_gets_the_training_metrics(synthetic, tmp_path):
    rows, scorer, result = synthetic
    again = evaluate_ranker(result.ranker, rows, scorer, CONFIG)
    assert again == {k: result.metrics[k] for k in again}
    assert {"ndcg_at_10", "retrieval_ndcg_at_10", "eval_groups"} <= set(again)
