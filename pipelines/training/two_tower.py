"""Two-tower retrieval model: train on point-in-time engagements, evaluate on the hold-out, export, reload.

A user tower and an item tower map raw features to L2-normalised embeddings whose dot product scores a
(user, post) pair; retrieval is a nearest-neighbour search over the item embeddings.

* Item tower: post id (lookup with OOV buckets), title and summary tokens (mean-pooled), tags (mean),
  source, author, post type, content type, language, and age (log-normalised plus buckets).
* User tower: user id (OOV buckets), the mean of the id embeddings of recently engaged posts (the SAME
  table as the item tower's id embedding), the mean of the selected tags' embeddings (the SAME table as
  the item tags), account age and activity.
* Both towers end with a shared tag-affinity block (see :class:`SharedTables`) before normalisation.
* Unseen ids: while training, ``id_dropout`` of the known post and user ids are swapped for their OOV
  bucket, so the OOV rows learn a generic vector and the towers learn to lean on content, tags and
  history; a post or user the model never saw therefore embeds from what it carries, not from noise.
  ``cold_start_dropout`` of the rows also lose their history and user id, so a brand-new user is ranked
  from the selected tags.

Loss: in-batch sampled softmax (``tfrs.tasks.Retrieval``) over ``q . c / temperature``, with
  * log-Q correction (``logq_correction``): every candidate column's logit is shifted by ``-log q_j``.
    Off by default: it makes the loss an unbiased estimate of the full softmax, which rewards posts that
    were popular in the training window, and in a feed where posts go stale within days that cost
    Recall@50 on the hold-out (see ``ablate_two_tower`` and ``bench/bench_training.py``);
  * mixed negatives: ``M = mixed_negatives`` posts drawn uniformly from the catalog are appended to the
    ``B`` in-batch candidates. A post then enters the candidate set by two routes, so its sampling
    probability is the mixture ``q_j = (B p_j + M / N) / (B + M)``, where ``p_j`` is its share of training
    engagements and ``N`` the catalog size; that ``q_j`` is used for in-batch and uniform columns alike
    (see :func:`candidate_sampling_probability`);
  * accidental-hit removal: a negative column holding the row's own positive post is masked;
  * optional hard-negative mining (keep the ``hard_negatives`` highest-scoring negatives per row).

Input pipeline: features are encoded once (lookups, text vectorisation); each epoch shuffles example
indices with the seed, gathers whole batches from memory and prefetches the next one. Python, numpy and
TensorFlow are seeded and ``deterministic_ops`` switches on TensorFlow's deterministic kernels, so the same
data and seed give the same model.

Reads: retrieval examples and the catalog (Arrow tables in the contract of ``sql/training``).
Writes (``export_two_tower``): ``models/two_tower/<version>/{user_tower,item_tower}/`` SavedModels that take
raw string features, ``metrics.json``, ``vocabularies.json`` and ``config.json`` (written last).
"""

from __future__ import annotations

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "tensorflow was imported before TF_USE_LEGACY_KERAS=1 was set; tensorflow-recommenders needs Keras 2 "
        "(tf-keras). Set TF_USE_LEGACY_KERAS=1 in the environment."
    )
# tensorflow-recommenders is written against Keras 2; TensorFlow picks the Keras flavour at import time.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import contextlib
import dataclasses
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from pipelines.core.lake import Lake
from pipelines.core.paths import TWO_TOWER, LakePaths
from pipelines.core.settings import EvaluationConfig, TwoTowerConfig
from pipelines.core.tables import as_table, first_true, require_columns
from pipelines.training.baselines import baseline_scorers
from pipelines.training.evaluation import embedding_scorer, evaluate_models
from pipelines.training.holdout import Holdout, build_holdout

log = logging.getLogger(__name__)

USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "history",
    "selected_tags",
    "account_age_days",
    "activity_lookback",
)
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "summary",
    "tags",
    "source",
    "author",
    "post_type",
    "content_type",
    "language",
    "item_age_days",
)
CATEGORICAL_ITEM_COLUMNS: tuple[str, ...] = ("source", "author", "post_type", "content_type", "language")
# Post age buckets in days: the first hours, the first days, the first weeks, older.
AGE_BOUNDARIES_DAYS: tuple[float, ...] = (0.25, 1.0, 2.0, 3.0, 5.0, 7.0, 14.0, 30.0, 90.0, 365.0)
EMBED_BATCH = 4096


# -- raw tables -> padded numpy features ---------------------------------------------------------------
def user_features(table: pa.Table | pd.DataFrame, config: TwoTowerConfig, what: str = "users") -> dict:
    """Raw user columns as numpy arrays the user tower takes (lists padded with ``""``).

    Raises:
        ValueError: a column is missing, or a row has a null id or a null/non-finite number.
    """
    table = as_table(table, what)
    require_columns(table, USER_COLUMNS, what)
    return {
        "user_id": _strings(table, "user_id", what),
        "history": _padded(table, "history", config.history_length, what),
        "selected_tags": _padded(table, "selected_tags", config.max_tags, what),
        "account_age_days": _floats(table, "account_age_days", what),
        "activity_lookback": _floats(table, "activity_lookback", what),
    }


def item_features(table: pa.Table | pd.DataFrame, config: TwoTowerConfig, what: str = "items") -> dict:
    """Raw item columns as numpy arrays the item tower takes (tags padded with ``""``).

    Raises:
        ValueError: a column is missing, or a row has a null id or a null/non-finite age.
    """
    table = as_table(table, what)
    require_columns(table, ITEM_COLUMNS, what)
    out: dict[str, np.ndarray] = {"item_id": _strings(table, "item_id", what)}
    for name in ("title", "summary", *CATEGORICAL_ITEM_COLUMNS):
        out[name] = _strings(table, name, what, allow_null=True)
    out["tags"] = _padded(table, "tags", config.max_tags, what)
    out["item_age_days"] = _floats(table, "item_age_days", what)
    return out


def _strings(table: pa.Table, name: str, what: str, allow_null: bool = False) -> np.ndarray:
    column = table.column(name)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        raise ValueError(f"{what}.{name} must be a string column, got {column.type}")
    if column.null_count:
        if not allow_null:
            raise ValueError(f"{what} row {first_true(pc.is_null(column))}: {name} is null")
        column = column.fill_null("")
    return column.to_numpy(zero_copy_only=False).astype(object)


def _floats(table: pa.Table, name: str, what: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise ValueError(f"{what} row {first_true(pc.is_null(column))}: {name} is null")
    try:
        values = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{what}.{name} must be numeric, got {column.type}") from exc
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{what} row {int(np.flatnonzero(bad)[0])}: {name} is not finite ({values[bad][0]})")
    return values.astype(np.float32)


def _padded(table: pa.Table, name: str, width: int, what: str) -> np.ndarray:
    """A list<string> column as an (n, width) object array: first ``width`` values, ``""`` padding."""
    column = table.column(name)
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise ValueError(f"{what}.{name} must be a list of strings, got {column.type}")
    if pa.types.is_null(column.type.value_type):  # e.g. a column of empty lists built from Python
        column = column.cast(pa.list_(pa.string()))
    if not pa.types.is_string(column.type.value_type) and not pa.types.is_large_string(
        column.type.value_type
    ):
        raise ValueError(f"{what}.{name} must be a list of strings, got {column.type}")
    lists = pc.list_slice(column.combine_chunks(), 0, width)
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists).fill_null("").to_numpy(zero_copy_only=False)
    out = np.full((table.num_rows, width), "", dtype=object)
    rows = np.repeat(np.arange(table.num_rows), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(values)) - np.repeat(starts, lengths)
    out[rows, cols] = values
    return out


def cap_examples_per_user(examples: pa.Table, max_per_user: int) -> pa.Table:
    """Keep each user's ``max_per_user`` most recent examples, so heavy users do not dominate the loss.

    Returns:
        The kept rows, ordered by user, then time (most recent first), then post: the same table
        whatever order the warehouse returned the rows in, so training does not depend on it.
    """
    if max_per_user < 1:
        raise ValueError(f"max_per_user must be >= 1, got {max_per_user}")
    ordered = examples.sort_by(
        [("user_id", "ascending"), ("event_ts", "descending"), ("item_id", "ascending")]
    )
    users = ordered.column("user_id").to_numpy(zero_copy_only=False)
    first = np.r_[True, users[1:] != users[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    rank = np.arange(len(users)) - group_start
    return ordered.filter(pa.array(rank < max_per_user))


# -- vocabularies and encoders -------------------------------------------------------------------------
def _by_frequency(*columns: pa.ChunkedArray | pa.Array) -> list[str]:
    """Distinct non-empty strings of ``columns``, most frequent first, ties by value (deterministic)."""
    chunks = [chunk for column in columns for chunk in getattr(column, "chunks", [column])]
    counts = pc.value_counts(pc.drop_null(pa.chunked_array(chunks, type=pa.string())))
    pairs = zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    return [v for v, _ in sorted(((v, c) for v, c in pairs if v), key=lambda vc: (-vc[1], vc[0]))]


@dataclasses.dataclass(frozen=True)
class Vocabularies:
    """Everything the lookups are built from; deterministic for the same training data."""

    item_ids: list[str]
    user_ids: list[str]
    tags: list[str]
    categorical: dict[str, list[str]]
    text: list[str]
    age_log_mean: float
    age_log_std: float
    account_age_log_mean: float
    account_age_log_std: float
    activity_log_mean: float
    activity_log_std: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _log_stats(values: np.ndarray) -> tuple[float, float]:
    logs = np.log1p(np.maximum(values, 0.0))
    return float(logs.mean()), float(max(logs.std(), 1e-3))


class FeatureEncoder(keras.layers.Layer):
    """Raw strings and numbers -> integer ids and normalised floats (vocabularies live here)."""

    def __init__(self, vocab: Vocabularies, config: TwoTowerConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab = vocab
        self.item_lookup = keras.layers.StringLookup(
            vocabulary=vocab.item_ids or ["<none>"], mask_token="", num_oov_indices=config.oov_buckets
        )
        self.user_lookup = keras.layers.StringLookup(
            vocabulary=vocab.user_ids or ["<none>"], mask_token="", num_oov_indices=config.oov_buckets
        )
        self.tag_lookup = keras.layers.StringLookup(vocabulary=vocab.tags or ["<none>"], mask_token="")
        self.categorical_lookups = {
            name: keras.layers.StringLookup(vocabulary=vocab.categorical[name] or ["<none>"], mask_token="")
            for name in CATEGORICAL_ITEM_COLUMNS
        }
        self.text = keras.layers.TextVectorization(
            vocabulary=vocab.text or ["<none>"], output_sequence_length=config.text_sequence_length
        )
        self.built = True  # no weights of its own: the lookups are complete at construction

    @staticmethod
    def _normalise(values: tf.Tensor, mean: float, std: float) -> tf.Tensor:
        return (tf.math.log1p(tf.maximum(tf.cast(values, tf.float32), 0.0)) - mean) / std

    def encode_items(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        age = tf.cast(raw["item_age_days"], tf.float32)
        out = {
            "item_id": self.item_lookup(raw["item_id"]),
            "title": self.text(raw["title"]),
            "summary": self.text(raw["summary"]),
            "tags": self.tag_lookup(raw["tags"]),
            "age": self._normalise(age, self.vocab.age_log_mean, self.vocab.age_log_std),
            "age_bucket": tf.raw_ops.Bucketize(input=age, boundaries=list(AGE_BOUNDARIES_DAYS)),
        }
        for name in CATEGORICAL_ITEM_COLUMNS:
            out[name] = self.categorical_lookups[name](raw[name])
        return out

    def encode_users(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {
            "user_id": self.user_lookup(raw["user_id"]),
            "history": self.item_lookup(raw["history"]),
            "selected_tags": self.tag_lookup(raw["selected_tags"]),
            "account_age": self._normalise(
                raw["account_age_days"], self.vocab.account_age_log_mean, self.vocab.account_age_log_std
            ),
            "activity": self._normalise(
                raw["activity_lookback"], self.vocab.activity_log_mean, self.vocab.activity_log_std
            ),
        }


# -- towers ----------------------------------------------------------------------------------------------
def _masked_mean(embedded: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean over the non-padding positions (id 0); all-padding rows give zeros."""
    mask = tf.cast(ids > 0, embedded.dtype)[..., None]
    return tf.reduce_sum(embedded * mask, axis=-2) / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)


def tag_affinity_dim(config: TwoTowerConfig) -> int:
    """Width of the shared tag-affinity block at the end of both embeddings."""
    return max(2, config.embedding_dim // 4)


class SharedTables(tf.Module):
    """Layers both towers use: post-id and tag embeddings, and the tag-affinity projection.

    Both embeddings end with ``W . mean(tag embeddings)`` (the user's selected tags, the post's tags) with
    the same ``W``, so their dot product contains ``t_user^T W^T W t_post``: a learned, positive
    semi-definite tag-overlap term. A brand-new user with only selected tags is therefore pulled towards
    posts carrying those tags by construction, not only if the dense layers happen to learn it.
    """

    def __init__(self, encoder: FeatureEncoder, config: TwoTowerConfig) -> None:
        super().__init__(name="shared_tables")
        self.item_id_embedding = keras.layers.Embedding(
            encoder.item_lookup.vocabulary_size(), config.id_embedding_dim, name="item_id_embedding"
        )
        self.tag_embedding = keras.layers.Embedding(
            encoder.tag_lookup.vocabulary_size(), config.feature_embedding_dim, name="tag_embedding"
        )
        self.tag_affinity = keras.layers.Dense(tag_affinity_dim(config), use_bias=False, name="tag_affinity")

    def tags(self, ids: tf.Tensor) -> tf.Tensor:
        return _masked_mean(self.tag_embedding(ids), ids)


def _head(config: TwoTowerConfig, name: str) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Dense(config.hidden_units, activation="relu"),
            keras.layers.Dense(config.embedding_dim - tag_affinity_dim(config)),
        ],
        name=name,
    )


class ItemTower(keras.layers.Layer):
    """Encoded post features -> L2-normalised embedding."""

    def __init__(
        self, encoder: FeatureEncoder, config: TwoTowerConfig, shared: SharedTables, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        dim = config.feature_embedding_dim
        self.shared = shared
        self.text_embedding = keras.layers.Embedding(encoder.text.vocabulary_size(), dim)
        self.categorical_embeddings = {
            name: keras.layers.Embedding(encoder.categorical_lookups[name].vocabulary_size(), dim)
            for name in CATEGORICAL_ITEM_COLUMNS
        }
        self.age_embedding = keras.layers.Embedding(len(AGE_BOUNDARIES_DAYS) + 1, dim)
        self.head = _head(config, "item_head")

    def call(self, x: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        tags = self.shared.tags(x["tags"])
        parts = [
            self.shared.item_id_embedding(x["item_id"]),
            _masked_mean(self.text_embedding(x["title"]), x["title"]),
            _masked_mean(self.text_embedding(x["summary"]), x["summary"]),
            tags,
            self.age_embedding(x["age_bucket"]),
            x["age"][:, None],
        ]
        parts += [self.categorical_embeddings[n](x[n]) for n in CATEGORICAL_ITEM_COLUMNS]
        out = tf.concat(
            [self.head(tf.concat(parts, axis=-1), training=training), self.shared.tag_affinity(tags)], -1
        )
        return tf.math.l2_normalize(out, axis=-1)


class UserTower(keras.layers.Layer):
    """Encoded user state -> L2-normalised embedding; history and tags reuse the item tower's tables."""

    def __init__(
        self, encoder: FeatureEncoder, config: TwoTowerConfig, shared: SharedTables, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.user_id_embedding = keras.layers.Embedding(
            encoder.user_lookup.vocabulary_size(), config.id_embedding_dim
        )
        self.shared = shared
        self.head = _head(config, "user_head")

    def call(self, x: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        tags = self.shared.tags(x["selected_tags"])
        has_history = tf.reduce_any(x["history"] > 0, axis=-1, keepdims=True)
        parts = [
            self.user_id_embedding(x["user_id"]),
            _masked_mean(self.shared.item_id_embedding(x["history"]), x["history"]),
            tags,
            tf.cast(has_history, tf.float32),
            x["account_age"][:, None],
            x["activity"][:, None],
        ]
        out = tf.concat(
            [self.head(tf.concat(parts, axis=-1), training=training), self.shared.tag_affinity(tags)], -1
        )
        return tf.math.l2_normalize(out, axis=-1)


# -- loss pieces -----------------------------------------------------------------------------------------
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


@dataclasses.dataclass
class TrainingData:
    """Encoded training inputs: per-example user and item features, and the candidate catalog."""

    encoder: FeatureEncoder
    vocab: Vocabularies
    examples: dict[str, Any]  # {"user": {...}, "item": {...}, "candidate_key": int64 (n,)}
    candidates: dict[str, np.ndarray]  # encoded features of every candidate post, by key
    candidate_ids: np.ndarray  # post id per key
    candidate_probability: np.ndarray  # p_j: share of training examples per key
    raw_examples: dict[str, Any]  # the same examples as raw padded arrays (for other input pipelines)

    @property
    def n_examples(self) -> int:
        return len(self.examples["candidate_key"])


class TwoTowerModel(tfrs.Model):
    """The two towers plus the retrieval loss; ``compute_loss`` takes a batch of :class:`TrainingData`."""

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


# -- preparation -----------------------------------------------------------------------------------------
def _candidate_table(train: pa.Table, catalog: pa.Table) -> pa.Table:
    """Catalog posts, then posts that only the training examples know (features of one of their examples)."""
    in_catalog = set(catalog.column("item_id").to_pylist())
    extra = train.select(list(ITEM_COLUMNS)).filter(
        pc.invert(pc.is_in(train.column("item_id"), value_set=pa.array(sorted(in_catalog), pa.string())))
    )
    if extra.num_rows:
        ids = extra.column("item_id").to_numpy(zero_copy_only=False)
        _, last = np.unique(ids[::-1], return_index=True)
        extra = extra.take(pa.array(np.sort(len(ids) - 1 - last)))
    base = catalog.select(list(ITEM_COLUMNS))
    return pa.concat_tables([base, extra.cast(base.schema)])


def _build_vocabularies(train: pa.Table, candidates: pa.Table, config: TwoTowerConfig) -> Vocabularies:
    item_ids = _by_frequency(train.column("item_id"), pc.list_flatten(train.column("history")))
    tags = _by_frequency(
        pc.list_flatten(candidates.column("tags")), pc.list_flatten(train.column("selected_tags"))
    )
    categorical = {name: _by_frequency(candidates.column(name)) for name in CATEGORICAL_ITEM_COLUMNS}
    texts = [
        t for t in [*candidates.column("title").to_pylist(), *candidates.column("summary").to_pylist()] if t
    ]
    adapter = keras.layers.TextVectorization(max_tokens=config.text_tokens)
    if texts:
        adapter.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(4096))
    text = [str(t) for t in adapter.get_vocabulary()[2:]]  # drop the padding and [UNK] entries
    age = _log_stats(pc.cast(train.column("item_age_days"), pa.float64()).to_numpy())
    account = _log_stats(pc.cast(train.column("account_age_days"), pa.float64()).to_numpy())
    activity = _log_stats(pc.cast(train.column("activity_lookback"), pa.float64()).to_numpy())
    return Vocabularies(
        item_ids=item_ids,
        user_ids=_by_frequency(train.column("user_id")),
        tags=tags,
        categorical=categorical,
        text=text,
        age_log_mean=age[0],
        age_log_std=age[1],
        account_age_log_mean=account[0],
        account_age_log_std=account[1],
        activity_log_mean=activity[0],
        activity_log_std=activity[1],
    )


def _encode_in_batches(fn: Callable[[dict], dict], raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(next(iter(raw.values())))
    chunks = [
        {
            k: v.numpy()
            for k, v in fn({k: tf.constant(v[s : s + EMBED_BATCH]) for k, v in raw.items()}).items()
        }
        for s in range(0, n, EMBED_BATCH)
    ]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def prepare_training_data(
    examples: pa.Table | pd.DataFrame, catalog: pa.Table | pd.DataFrame, config: TwoTowerConfig
) -> TrainingData:
    """Cap, build the vocabularies and encode the training split once.

    Args:
        examples: retrieval examples; rows with ``split == 'train'`` are used.
        catalog: the posts uniform negatives are drawn from (plus posts only the examples know).
        config: the two-tower config.

    Returns:
        The encoded training data.

    Raises:
        ValueError: a required column is missing, a value is bad (the row is named), or there are no
            training rows.
    """
    examples = as_table(examples, "examples")
    catalog = as_table(catalog, "catalog")
    require_columns(examples, ("split", "event_ts", *USER_COLUMNS, *ITEM_COLUMNS), "examples")
    require_columns(catalog, ITEM_COLUMNS, "catalog")
    catalog_ids = _strings(catalog, "item_id", "catalog")
    unique, counts = np.unique(catalog_ids.astype(str), return_counts=True)
    if (counts > 1).any():
        duplicate, times = str(unique[counts > 1][0]), int(counts[counts > 1][0])
        raise ValueError(f"catalog item_id {duplicate!r} appears {times} times; ids must be unique")
    train = examples.filter(pc.equal(examples.column("split"), "train"))
    if train.num_rows == 0:
        raise ValueError("examples have no rows with split == 'train'")
    capped = cap_examples_per_user(train, config.max_examples_per_user)
    if capped.num_rows < train.num_rows:
        log.info(
            "capped %d training examples to %d (max %d per user)",
            train.num_rows,
            capped.num_rows,
            config.max_examples_per_user,
        )
    candidates = _candidate_table(capped, catalog)
    vocab = _build_vocabularies(capped, candidates, config)
    encoder = FeatureEncoder(vocab, config)

    candidate_ids = candidates.column("item_id").to_numpy(zero_copy_only=False).astype(object)
    key_of = pd.Index(candidate_ids)
    keys = key_of.get_indexer(capped.column("item_id").to_numpy(zero_copy_only=False)).astype(np.int64)
    counts = np.bincount(keys, minlength=len(candidate_ids))
    raw_users = user_features(capped, config, "examples")
    raw_items = item_features(capped, config, "examples")
    return TrainingData(
        encoder=encoder,
        vocab=vocab,
        examples={
            "user": _encode_in_batches(encoder.encode_users, raw_users),
            "item": _encode_in_batches(encoder.encode_items, raw_items),
            "candidate_key": keys,
        },
        candidates=_encode_in_batches(encoder.encode_items, item_features(candidates, config, "catalog")),
        candidate_ids=candidate_ids,
        candidate_probability=counts / counts.sum(),
        raw_examples={"user": raw_users, "item": raw_items, "candidate_key": keys},
    )


def training_dataset(data: TrainingData, config: TwoTowerConfig) -> tf.data.Dataset:
    """Shuffled batches of the encoded examples.

    The features were encoded once up front (the expensive part: lookups and text vectorisation), so an
    epoch only shuffles example indices (seeded, reshuffled per epoch) and gathers whole batches from
    in-memory tensors, with the next batch prefetched while the current one trains.
    """
    tensors = tf.nest.map_structure(tf.constant, data.examples)
    return (
        tf.data.Dataset.range(data.n_examples)
        .shuffle(data.n_examples, seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .map(
            lambda idx: tf.nest.map_structure(lambda t: tf.gather(t, idx), tensors),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow (the global seed also fixes Keras' initialisers)."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def deterministic_ops(enabled: bool) -> Iterator[None]:
    """Run the block with TensorFlow's deterministic kernels, then restore the process-wide setting.

    TensorFlow's public API can only switch determinism on; the switch back uses its config module so
    that other stages in the same process keep their own choice.
    """
    from tensorflow.python.framework import config as tf_config

    switch = enabled and not tf_config.is_op_determinism_enabled()
    if switch:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_config.disable_op_determinism()


class _EpochLog(keras.callbacks.Callback):
    def __init__(self, n_examples: int) -> None:
        super().__init__()
        self.n_examples = n_examples
        self.losses: list[float] = []
        self.rates: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        rate = self.n_examples / max(time.perf_counter() - self._started, 1e-9)
        loss = float((logs or {})["epoch_loss"])
        self.losses.append(loss)
        self.rates.append(rate)
        log.info("epoch %d: loss %.4f, %.0f examples/s", epoch + 1, loss, rate)


def fit_model(
    model: TwoTowerModel, dataset: tf.data.Dataset, config: TwoTowerConfig, n_examples: int
) -> tuple[list[float], list[float]]:
    """Compile and fit; return the mean loss and the examples/s of every epoch."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate))
    callback = _EpochLog(n_examples)
    model.fit(dataset, epochs=config.epochs, verbose=0, callbacks=[callback])
    return callback.losses, callback.rates


# -- serving modules ---------------------------------------------------------------------------------------
def _user_spec(config: TwoTowerConfig) -> dict[str, tf.TensorSpec]:
    return {
        "user_id": tf.TensorSpec([None], tf.string),
        "history": tf.TensorSpec([None, config.history_length], tf.string),
        "selected_tags": tf.TensorSpec([None, config.max_tags], tf.string),
        "account_age_days": tf.TensorSpec([None], tf.float32),
        "activity_lookback": tf.TensorSpec([None], tf.float32),
    }


def _item_spec(config: TwoTowerConfig) -> dict[str, tf.TensorSpec]:
    spec = {name: tf.TensorSpec([None], tf.string) for name in ITEM_COLUMNS}
    spec["tags"] = tf.TensorSpec([None, config.max_tags], tf.string)
    spec["item_age_days"] = tf.TensorSpec([None], tf.float32)
    return spec


class UserServer(tf.Module):
    """Raw user features -> embeddings; what is saved as ``user_tower/``."""

    def __init__(self, encoder: FeatureEncoder, tower: UserTower, config: TwoTowerConfig) -> None:
        super().__init__(name="user_server")
        self.encoder, self.tower = encoder, tower
        self.embed = tf.function(
            lambda raw: self.tower(self.encoder.encode_users(raw), training=False),
            input_signature=[_user_spec(config)],
        )


class ItemServer(tf.Module):
    """Raw post features -> embeddings; what is saved as ``item_tower/``."""

    def __init__(self, encoder: FeatureEncoder, tower: ItemTower, config: TwoTowerConfig) -> None:
        super().__init__(name="item_server")
        self.encoder, self.tower = encoder, tower
        self.embed = tf.function(
            lambda raw: self.tower(self.encoder.encode_items(raw), training=False),
            input_signature=[_item_spec(config)],
        )


def _embed(fn: Callable[[dict], tf.Tensor], raw: dict[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(raw.values())))
    out = [
        fn({k: tf.constant(v[s : s + EMBED_BATCH]) for k, v in raw.items()}).numpy()
        for s in range(0, n, EMBED_BATCH)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclasses.dataclass(frozen=True)
class Towers:
    """Batched embedding functions over raw tables, from a trained or a reloaded model."""

    embed_users: Callable[[pa.Table | pd.DataFrame], np.ndarray]
    embed_items: Callable[[pa.Table | pd.DataFrame], np.ndarray]
    config: TwoTowerConfig
    version: str | None = None
    owners: tuple[Any, ...] = dataclasses.field(default=(), repr=False)  # objects the functions live in


def _towers(
    user_fn: Callable, item_fn: Callable, config: TwoTowerConfig, version: str | None, owners: tuple[Any, ...]
) -> Towers:
    # The functions close over ``owners`` so the models holding their variables live as long as they do,
    # even when the Towers object itself is a temporary (``load_towers(...).embed_items(...)``).
    return Towers(
        embed_users=lambda users, _owners=owners: _embed(user_fn, user_features(users, config)),
        embed_items=lambda items, _owners=owners: _embed(item_fn, item_features(items, config)),
        config=config,
        version=version,
        owners=owners,
    )


# -- train, evaluate, export, load -----------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    """A trained two-tower model with its evaluation on the run's hold-out.

    Attributes:
        metrics: ``{"two_tower": {...}, "most_popular": {...}, "item_knn": {...}}`` on the same hold-out.
        loss_history: mean training loss per epoch.
        examples_per_second: training throughput per epoch (the first includes graph tracing).
    """

    model: TwoTowerModel
    towers: Towers
    user_server: UserServer
    item_server: ItemServer
    config: TwoTowerConfig
    eval_config: EvaluationConfig
    metrics: dict[str, dict[str, float]]
    holdout: Holdout
    loss_history: list[float]
    examples_per_second: list[float]
    vocabularies: Vocabularies
    n_train_examples: int
    train_seconds: float

    @property
    def throughput(self) -> float:
        """Steady-state examples/s: the median epoch after the first (which traces the graph)."""
        rates = self.examples_per_second[1:] or self.examples_per_second
        return float(np.median(rates))

    def report(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "holdout": self.holdout.summary(),
            "loss_history": self.loss_history,
            "examples_per_second": self.examples_per_second,
            "throughput": self.throughput,
            "n_train_examples": self.n_train_examples,
            "train_seconds": self.train_seconds,
            "temperature": float(self.model.temperature.numpy()),
        }


def train_two_tower(
    examples: pa.Table | pd.DataFrame,
    catalog: pa.Table | pd.DataFrame,
    config: TwoTowerConfig,
    eval_config: EvaluationConfig,
    eval_users: pa.Table | pd.DataFrame | None = None,
    holdout: Holdout | None = None,
) -> TrainResult:
    """Train on the ``train`` split, then evaluate the model and the baselines on the ``eval`` split.

    Args:
        examples: retrieval examples (see the data contract in ``sql/training``).
        catalog: posts to rank at eval time and to draw uniform negatives from.
        config: model, loss and schedule.
        eval_config: cut-offs and baseline settings.
        eval_users: user state at the start of the eval window; derived from the first eval example of
            each user when None.
        holdout: a hold-out already built from these examples (ablations share one).

    Returns:
        The trained model, its metrics next to the baselines', the loss history and throughput.

    Raises:
        ValueError: bad or missing input (the column or row is named), or no train/eval rows.
    """
    if holdout is None:
        holdout = build_holdout(examples, catalog, eval_config, USER_COLUMNS, users=eval_users)
    seed_everything(config.seed)
    started = time.perf_counter()
    data = prepare_training_data(examples, catalog, config)
    log.info(
        "two-tower: %d training examples, %d candidate posts, %d known posts, %d known users",
        data.n_examples,
        len(data.candidate_ids),
        len(data.vocab.item_ids),
        len(data.vocab.user_ids),
    )
    with deterministic_ops(config.deterministic_ops):
        model = TwoTowerModel(data, config)
        losses, rates = fit_model(model, training_dataset(data, config), config, data.n_examples)
    train_seconds = time.perf_counter() - started
    user_server = UserServer(data.encoder, model.user_tower, config)
    item_server = ItemServer(data.encoder, model.item_tower, config)
    towers = _towers(user_server.embed, item_server.embed, config, None, (user_server, item_server))
    metrics = evaluate_towers(towers, holdout, eval_config, with_baselines=True)
    return TrainResult(
        model=model,
        towers=towers,
        user_server=user_server,
        item_server=item_server,
        config=config,
        eval_config=eval_config,
        metrics=metrics,
        holdout=holdout,
        loss_history=losses,
        examples_per_second=rates,
        vocabularies=data.vocab,
        n_train_examples=data.n_examples,
        train_seconds=train_seconds,
    )


def evaluate_towers(
    towers: Towers, holdout: Holdout, eval_config: EvaluationConfig, with_baselines: bool = False
) -> dict[str, dict[str, float]]:
    """Metrics of a two-tower model (trained now or reloaded) on ``holdout``, optionally with the baselines.

    Returns:
        ``{"two_tower": metrics, ...baselines}``.
    """
    user_embeddings = towers.embed_users(holdout.users)
    item_embeddings = towers.embed_items(holdout.catalog)
    scorers = {"two_tower": embedding_scorer(user_embeddings, item_embeddings)}
    if with_baselines:
        scorers.update(baseline_scorers(holdout, eval_config))
    return evaluate_models(scorers, holdout, eval_config)


def evaluate_version(
    lake: Lake, version: str, holdout: Holdout, eval_config: EvaluationConfig
) -> dict[str, float]:
    """Re-evaluate an exported model (e.g. the champion) on this run's hold-out.

    Raises:
        FileNotFoundError: the version was never exported completely.
    """
    return evaluate_towers(load_towers(lake, version), holdout, eval_config)["two_tower"]


ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "with_logq": {"logq_correction": True},
    "no_logq": {"logq_correction": False},
    "no_accidental_hit_removal": {"remove_accidental_hits": False},
    "no_mixed_negatives": {"mixed_negatives": 0},
}


def ablate_two_tower(
    examples: pa.Table | pd.DataFrame,
    catalog: pa.Table | pd.DataFrame,
    config: TwoTowerConfig,
    eval_config: EvaluationConfig,
    variants: tuple[str, ...] = tuple(ABLATIONS),
    eval_users: pa.Table | pd.DataFrame | None = None,
) -> dict[str, dict[str, float]]:
    """Train one model per variant on the same data and hold-out and return each one's metrics.

    A variant sets one option on top of ``config`` (see :data:`ABLATIONS`); ``full`` is ``config``
    itself. A variant that changes nothing reuses the metrics of the identical run instead of retraining.

    Returns:
        ``{variant: two-tower metrics}``, plus ``"most_popular"`` and ``"item_knn"`` from the same hold-out.

    Raises:
        ValueError: an unknown variant name.
    """
    unknown = [v for v in variants if v not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; choose from {sorted(ABLATIONS)}")
    holdout = build_holdout(examples, catalog, eval_config, USER_COLUMNS, users=eval_users)
    results: dict[str, dict[str, float]] = {}
    by_config: dict[str, dict[str, dict[str, float]]] = {}
    for variant in variants:
        variant_config = config.model_copy(update=ABLATIONS[variant])
        key = variant_config.model_dump_json()
        if key not in by_config:
            by_config[key] = train_two_tower(
                examples, catalog, variant_config, eval_config, holdout=holdout
            ).metrics
        results[variant] = by_config[key]["two_tower"]
        log.info(
            "ablation %s: recall_at_50=%.4f", variant, results[variant].get("recall_at_50", float("nan"))
        )
    baselines = next(iter(by_config.values()), {})
    results.update({name: m for name, m in baselines.items() if name != "two_tower"})
    return results


def export_two_tower(result: TrainResult, lake: Lake, version: str) -> str:
    """Save the towers, vocabularies, metrics and config under ``models/two_tower/<version>/``.

    ``config.json`` is written last: a version folder without it is an unfinished export.

    Returns:
        The URI of the version folder.

    Raises:
        FileExistsError: the version was already exported (versions are never overwritten).
    """
    model_dir = LakePaths.model_dir(TWO_TOWER, version)
    if lake.exists(f"{model_dir}/config.json"):
        raise FileExistsError(f"{lake.uri(model_dir)} already holds an exported model")
    with tempfile.TemporaryDirectory(prefix="two_tower-") as tmp:
        tf.saved_model.save(result.user_server, f"{tmp}/user_tower")
        tf.saved_model.save(result.item_server, f"{tmp}/item_tower")
        lake.put_dir(f"{tmp}/user_tower", f"{model_dir}/user_tower")
        lake.put_dir(f"{tmp}/item_tower", f"{model_dir}/item_tower")
    lake.write_json(f"{model_dir}/vocabularies.json", result.vocabularies.to_json())
    lake.write_json(f"{model_dir}/metrics.json", {**result.report(), "version": version})
    lake.write_json(
        f"{model_dir}/config.json",
        {
            "kind": TWO_TOWER,
            "version": version,
            "two_tower": result.config.model_dump(),
            "evaluation": result.eval_config.model_dump(),
            "embedding_dim": result.config.embedding_dim,
            "n_train_examples": result.n_train_examples,
        },
    )
    log.info("exported two-tower %s to %s", version, lake.uri(model_dir))
    return lake.uri(model_dir)


def load_towers(lake: Lake, version: str, cache_dir: str | Path | None = None) -> Towers:
    """Load an exported model's towers; ``embed_users`` / ``embed_items`` take raw tables.

    Args:
        lake: the lake the model was exported to.
        version: the model version.
        cache_dir: where remote models are downloaded (a temporary folder when None); local lakes are read
            in place.

    Raises:
        FileNotFoundError: no complete export of ``version``.
    """
    model_dir = LakePaths.model_dir(TWO_TOWER, version)
    if not lake.exists(f"{model_dir}/config.json"):
        raise FileNotFoundError(
            f"no complete two-tower export at {lake.uri(model_dir)} (config.json missing)"
        )
    saved = json.loads(lake.read_bytes(f"{model_dir}/config.json"))
    config = TwoTowerConfig.model_validate(saved["two_tower"])
    if lake.protocol == "file":
        local = Path(lake.path(model_dir))
    else:
        local = Path(cache_dir or tempfile.mkdtemp(prefix="two_tower-")) / version
        lake.get_dir(f"{model_dir}/user_tower", local / "user_tower")
        lake.get_dir(f"{model_dir}/item_tower", local / "item_tower")
    user_server = tf.saved_model.load(str(local / "user_tower"))
    item_server = tf.saved_model.load(str(local / "item_tower"))
    return _towers(user_server.embed, item_server.embed, config, version, (user_server, item_server))
