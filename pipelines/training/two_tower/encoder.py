"""The vocabularies of the two-tower model, built from the training split, and the Keras layer that uses
them to turn raw strings and numbers into integer ids and normalised floats.

Reads the capped training examples and the candidate posts (Arrow tables); writes nothing (the
vocabularies are saved with the model by :mod:`pipelines.training.two_tower.export`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tf_keras as keras

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.features import CATEGORICAL_ITEM_COLUMNS

# Post age buckets in days: the first hours, the first days, the first weeks, older.
AGE_BOUNDARIES_DAYS: tuple[float, ...] = (0.25, 1.0, 2.0, 3.0, 5.0, 7.0, 14.0, 30.0, 90.0, 365.0)


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


def build_vocabularies(train: pa.Table, candidates: pa.Table, config: TwoTowerConfig) -> Vocabularies:
    """Ids, tags, categories and text tokens by frequency, and the log-normalisation of the numbers.

    Args:
        train: the capped training examples.
        candidates: every post the model ranks (catalog and posts only the examples know).
        config: ``text_tokens``, the size of the text vocabulary.

    Returns:
        The vocabularies.
    """
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
