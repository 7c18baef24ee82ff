"""The two-tower model: both towers plus the in-batch sampled-softmax retrieval loss and its pieces
(log-Q correction, mixed negatives, accidental-hit removal, hard negatives, OOV id dropout).

Reads and writes nothing; it trains on :class:`pipelines.training.two_tower.data.TrainingData`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.data import TrainingData
from pipelines.training.two_tower.towers import ItemTower, SharedTables, UserTower


def candidate_sampling_probability(
    item_probability: Any, batch_size: Any, num_uniform: int, catalog_size: int
) -> Any:
    """Probability with which each candidate column was sampled, for the log-Q correction.

    In-batch candidates are the positives of other rows, so post ``j`` shows up about ``B * p_j`` times
    per batch (``p_j`` = its share of training engagements); ``M`` uniform draws from ``N`` posts add
    ``M / N`` expected occurrences. The proposal is the mixture of the two routes:
    ``q_j = (B * p_j + M / N) / (B + M)``. With ``M = 0`` this is plain ``p_j``. Works on numpy arrays and
    tensors alike.

    Args:
        item_probability: ``p_j`` per candidate column.
        batch_size: ``B``, the in-batch candidates.
        num_uniform: ``M``, uniformly sampled extra candidates.
        catalog_size: ``N``, the size of the set the uniform candidates are drawn from.
    """
    if num_uniform == 0:
        return item_probability
    return (batch_size * item_probability + num_uniform / catalog_size) / (batch_size + num_uniform)


def make_retrieval_task(config: TwoTowerConfig) -> tfrs.tasks.Retrieval:
    """The TFRS task with this config's loss options; temperature is applied by the caller."""
    return tfrs.tasks.Retrieval(
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.SUM_OVER_BATCH_SIZE
        ),
        num_hard_negatives=config.hard_negatives or None,
        remove_accidental_hits=config.remove_accidental_hits,
    )


def _swap_for_oov(ids: tf.Tensor, rate: float, oov_buckets: int, rng: tf.random.Generator) -> tf.Tensor:
    """Replace a random ``rate`` share of known ids (> oov_buckets) by their OOV bucket (1..oov_buckets)."""
    known = ids > oov_buckets
    swap = rng.uniform(tf.shape(ids)) < rate
    return tf.where(known & swap, 1 + ids % oov_buckets, ids)


class TwoTowerModel(tfrs.Model):
    """The two towers plus the retrieval loss; ``compute_loss`` takes a batch of :class:`TrainingData`.

    Loss: in-batch sampled softmax (``tfrs.tasks.Retrieval``) over ``q . c / temperature``, with

    * log-Q correction (``logq_correction``): every candidate column's logit is shifted by ``-log q_j``.
      Off by default: it makes the loss an unbiased estimate of the full softmax, which rewards posts that
      were popular in the training window, and in a feed where posts go stale within days that cost
      Recall@50 on the hold-out (see ``ablate_two_tower`` and ``bench/bench_training.py``);
    * mixed negatives: ``M = mixed_negatives`` posts drawn uniformly from the catalog are appended to the
      ``B`` in-batch candidates. A post then enters the candidate set by two routes, so its sampling
      probability is the mixture ``q_j = (B p_j + M / N) / (B + M)``, where ``p_j`` is its share of
      training engagements and ``N`` the catalog size; that ``q_j`` is used for in-batch and uniform
      columns alike (see :func:`candidate_sampling_probability`);
    * accidental-hit removal: a negative column holding the row's own positive post is masked;
    * optional hard-negative mining (keep the ``hard_negatives`` highest-scoring negatives per row).

    Unseen ids: while training, ``id_dropout`` of the known post and user ids are swapped for their OOV
    bucket, so the OOV rows learn a generic vector and the towers learn to lean on content, tags and
    history; a post or user the model never saw therefore embeds from what it carries, not from noise.
    ``cold_start_dropout`` of the rows also lose their history and user id, so a brand-new user is ranked
    from the selected tags.
    """

    def __init__(self, data: TrainingData, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        encoder = data.encoder
        shared = SharedTables(encoder, config)
        self.user_tower = UserTower(encoder, config, shared, name="user_tower")
        self.item_tower = ItemTower(encoder, config, shared, name="item_tower")
        self.task = make_retrieval_task(config)
        self.log_temperature = tf.Variable(
            np.log(config.temperature),
            dtype=tf.float32,
            trainable=config.learnable_temperature,
            name="log_temp",
        )
        self.candidates = {k: tf.constant(v) for k, v in data.candidates.items()}
        self.candidate_probability = tf.constant(data.candidate_probability, dtype=tf.float32)
        self.n_candidates = len(data.candidate_ids)
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.loss_tracker = keras.metrics.Mean(name="epoch_loss")

    @property
    def temperature(self) -> tf.Tensor:
        return tf.clip_by_value(tf.exp(self.log_temperature), 1e-3, 10.0)

    def _dropout_users(self, x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        rate, oov = self.config.id_dropout, self.config.oov_buckets
        user_id = _swap_for_oov(x["user_id"], rate, oov, self.rng)
        history = _swap_for_oov(x["history"], rate, oov, self.rng)
        # Some rows play a brand-new user: unknown id, no history, only the selected tags and counters.
        cold = self.rng.uniform(tf.shape(user_id)) < self.config.cold_start_dropout
        user_id = tf.where(cold & (user_id > oov), 1 + user_id % oov, user_id)
        history = tf.where(cold[:, None], tf.zeros_like(history), history)
        return {**x, "user_id": user_id, "history": history}

    def _dropout_items(self, x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {
            **x,
            "item_id": _swap_for_oov(x["item_id"], self.config.id_dropout, self.config.oov_buckets, self.rng),
        }

    def candidate_set(
        self, batch: dict[str, Any], training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """Query embeddings, candidate embeddings, candidate keys and sampling probabilities of a batch.

        Candidates are the batch's positives followed by ``mixed_negatives`` uniform catalog draws.
        """
        users, items, keys = batch["user"], batch["item"], batch["candidate_key"]
        if training:
            users, items = self._dropout_users(users), self._dropout_items(items)
        queries = self.user_tower(users, training=training)
        candidates = self.item_tower(items, training=training)
        num_uniform = self.config.mixed_negatives
        if num_uniform:
            extra_keys = self.rng.uniform([num_uniform], 0, self.n_candidates, dtype=tf.int64)
            extra = {k: tf.gather(v, extra_keys) for k, v in self.candidates.items()}
            if training:
                extra = self._dropout_items(extra)
            candidates = tf.concat([candidates, self.item_tower(extra, training=training)], axis=0)
            keys = tf.concat([keys, extra_keys], axis=0)
        probability = None
        if self.config.logq_correction:
            batch_size = tf.cast(tf.shape(queries)[0], tf.float32)
            probability = candidate_sampling_probability(
                tf.gather(self.candidate_probability, keys), batch_size, num_uniform, self.n_candidates
            )
        return queries, candidates, keys, probability

    def compute_loss(self, batch: dict[str, Any], training: bool = False) -> tf.Tensor:
        queries, candidates, keys, probability = self.candidate_set(batch, training=training)
        loss = self.task(
            queries / self.temperature,
            candidates,
            candidate_sampling_probability=probability,
            candidate_ids=keys,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
        self.loss_tracker.update_state(loss)
        return loss
