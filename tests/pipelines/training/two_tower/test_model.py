"""Two-tower model: loss pieces by hand, and the candidate set and loss of one batch of the tiny world."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower import model as two_tower_model
from pipelines.training.two_tower.data import prepare_training_data, training_dataset
from tests.pipelines.training.two_tower.fast import FAST

tf = two_tower_model.tf


def _loss(config: TwoTowerConfig, queries, candidates, probability=None, ids=None) -> float:
    task = two_tower_model.make_retrieval_task(config)
    return float(
        task(
            tf.constant(queries, tf.float32),
            tf.constant(candidates, tf.float32),
            candidate_sampling_probability=None
            if probability is None
            else tf.constant(probability, tf.float32),
            candidate_ids=None if ids is None else tf.constant(ids),
            compute_metrics=False,
        )
    )


def test_logq_shifts_each_candidate_logit_by_minus_log_q():
    queries = [[1.0, 0.0], [0.0, 1.0]]
    candidates = [[1.0, 0.0], [0.6, 0.8]]
    # logits = q c^T = [[1, 0.6], [0, 0.8]]; positives on the diagonal
    config = FAST.model_copy(update={"remove_accidental_hits": False})
    # without correction: row 0 log(e^1 + e^0.6) - 1 = 0.5130; row 1 log(e^0 + e^0.8) - 0.8 = 0.3711
    assert _loss(config, queries, candidates) == pytest.approx((0.51302 + 0.37110) / 2, abs=1e-4)
    # q = [0.5, 0.1]: subtract log q = [-0.6931, -2.3026] -> [[1.6931, 2.9026], [0.6931, 3.1026]]
    # row 0: log(e^1.6931 + e^2.9026) - 1.6931 = 1.4705; row 1: log(e^0.6931 + e^3.1026) - 3.1026 = 0.0862
    corrected = _loss(config, queries, candidates, probability=[0.5, 0.1])
    assert corrected == pytest.approx((1.47049 + 0.08623) / 2, abs=1e-4)
    logits = np.array([[1.0, 0.6], [0.0, 0.8]]) - np.log([0.5, 0.1])
    by_numpy = np.mean([np.logaddexp.reduce(logits[i]) - logits[i, i] for i in range(2)])
    assert corrected == pytest.approx(by_numpy, abs=1e-5)


def test_accidental_hits_are_masked():
    # q = identity, so the logits are c^T: [[2, 1, 0], [0, 1, 0], [0, 0, 1]]; ids [7, 7, 9]
    queries = np.eye(3)
    candidates = [[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    config = FAST.model_copy(update={"remove_accidental_hits": True})
    # row 0 (post 7): column 1 is post 7 too -> masked: log(e^2 + e^0) - 2 = 0.1269
    # row 1 (post 7): column 0 masked: log(e^1 + e^0) - 1 = 0.3133
    # row 2 (post 9): nothing masked: log(e^0 + e^0 + e^1) - 1 = 0.5514
    assert _loss(config, queries, candidates, ids=[7, 7, 9]) == pytest.approx(
        (0.12693 + 0.31326 + 0.55144) / 3, abs=1e-4
    )
    # switched off, row 0 also counts column 1: log(e^2 + e^1 + e^0) - 2 = 0.4076
    off = FAST.model_copy(update={"remove_accidental_hits": False})
    assert _loss(off, queries, candidates, ids=[7, 7, 9]) == pytest.approx(
        (0.40761 + 0.55144 + 0.55144) / 3, abs=1e-4
    )


def test_hard_negatives_keep_the_highest_scoring_negatives():
    # one query, logits [1, 3, 2, -1] with the positive first
    queries, candidates = [[1.0]], [[1.0], [3.0], [2.0], [-1.0]]
    # all negatives: log(e^1 + e^3 + e^2 + e^-1) - 1 = 2.4197
    assert _loss(
        FAST.model_copy(update={"remove_accidental_hits": False}), queries, candidates
    ) == pytest.approx(2.41972, abs=1e-4)
    # hardest one only (3): log(e^1 + e^3) - 1 = 2.1269
    hard = FAST.model_copy(update={"remove_accidental_hits": False, "hard_negatives": 1})
    assert _loss(hard, queries, candidates) == pytest.approx(2.12693, abs=1e-4)


def test_mixed_negative_sampling_probability():
    # B = 4 in-batch, M = 2 uniform from N = 8: q = (4 p + 2/8) / 6
    # p = 0.5 -> (2 + 0.25) / 6 = 0.375; p = 0.25 -> (1 + 0.25) / 6 = 0.20833; p = 0 -> 0.25 / 6 = 0.041667
    q = two_tower_model.candidate_sampling_probability(np.array([0.5, 0.25, 0.0]), 4, 2, 8)
    np.testing.assert_allclose(q, [0.375, 0.208333, 0.041667], rtol=1e-5)
    # no uniform candidates: the in-batch share itself
    np.testing.assert_allclose(
        two_tower_model.candidate_sampling_probability(np.array([0.5]), 4, 0, 8), [0.5]
    )


def test_swap_for_oov_only_touches_known_ids():
    ids = tf.constant([[0, 1, 5, 9]], tf.int64)  # 0 = padding, 1..4 = OOV buckets, 5.. = known
    rng = tf.random.Generator.from_seed(1)
    # rate 1: 5 -> 1 + 5 % 4 = 2, 9 -> 1 + 9 % 4 = 2; padding and OOV stay
    assert two_tower_model._swap_for_oov(ids, 1.0, 4, rng).numpy().tolist() == [[0, 1, 2, 2]]
    assert two_tower_model._swap_for_oov(ids, 0.0, 4, rng).numpy().tolist() == [[0, 1, 5, 9]]


@pytest.fixture(scope="module")
def small_data(world):
    return prepare_training_data(world.examples, world.catalog, FAST)


def _first_batch(data, config):
    return next(iter(training_dataset(data, config)))


def test_candidate_set_appends_uniform_negatives_with_mixture_probability(small_data):
    model = two_tower_model.TwoTowerModel(small_data, FAST)
    batch = _first_batch(small_data, FAST)
    queries, candidates, keys, probability = model.candidate_set(batch, training=True)
    b, m, n = FAST.batch_size, FAST.mixed_negatives, len(small_data.candidate_ids)
    assert queries.shape == (b, FAST.embedding_dim) and candidates.shape == (b + m, FAST.embedding_dim)
    assert keys[:b].numpy().tolist() == batch["candidate_key"].numpy().tolist()
    assert int(tf.reduce_min(keys[b:])) >= 0 and int(tf.reduce_max(keys[b:])) < n
    p = small_data.candidate_probability[keys.numpy()]
    np.testing.assert_allclose(probability.numpy(), (b * p + m / n) / (b + m), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(candidates.numpy(), axis=1), 1.0, rtol=1e-5)


def test_compute_loss_is_the_corrected_softmax_of_the_embeddings(small_data):
    config = FAST.model_copy(update={"mixed_negatives": 0, "temperature": 0.5})
    model = two_tower_model.TwoTowerModel(small_data, config)
    batch = _first_batch(small_data, config)
    queries, candidates, keys, probability = model.candidate_set(batch)
    logits = queries.numpy() @ candidates.numpy().T / 0.5 - np.log(probability.numpy())
    keys = keys.numpy()
    rows = []
    for i in range(len(keys)):
        keep = (keys != keys[i]) | (np.arange(len(keys)) == i)  # accidental hits removed
        rows.append(np.logaddexp.reduce(logits[i, keep]) - logits[i, i])
    assert float(model.compute_loss(batch)) == pytest.approx(np.mean(rows), rel=1e-4)
    no_logq = two_tower_model.TwoTowerModel(small_data, config.model_copy(update={"logq_correction": False}))
    assert no_logq.candidate_set(batch)[3] is None


def test_temperature_is_trained_only_when_learnable(small_data):
    fixed = two_tower_model.TwoTowerModel(small_data, FAST)
    learnable = two_tower_model.TwoTowerModel(
        small_data, FAST.model_copy(update={"learnable_temperature": True})
    )
    batch = _first_batch(small_data, FAST)
    for model in (fixed, learnable):
        model.compute_loss(batch)  # builds the layers
    assert not any(v is fixed.log_temperature for v in fixed.trainable_variables)
    assert any(v is learnable.log_temperature for v in learnable.trainable_variables)
    with tf.GradientTape() as tape:
        loss = learnable.compute_loss(batch)
    assert float(tape.gradient(loss, learnable.log_temperature)) != 0.0
