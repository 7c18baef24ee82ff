"""The two towers: encoded features -> L2-normalised embeddings whose dot product scores a (user, post) pair.

* Item tower: post id (lookup with OOV buckets), title and summary tokens (mean-pooled), tags (mean),
  source, author, post type, content type, language, and age (log-normalised plus buckets).
* User tower: user id (OOV buckets), the mean of the id embeddings of recently engaged posts (the SAME
  table as the item tower's id embedding), the mean of the selected tags' embeddings (the SAME table as
  the item tags), account age and activity.
* Both towers end with a shared tag-affinity block (see :class:`SharedTables`) before normalisation.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.encoder import AGE_BOUNDARIES_DAYS, FeatureEncoder
from pipelines.training.two_tower.features import CATEGORICAL_ITEM_COLUMNS


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
