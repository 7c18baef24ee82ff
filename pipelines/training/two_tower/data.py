"""Training inputs of the two-tower model: the training split capped, its vocabularies built and its
features encoded once, and the shuffled batches an epoch reads from memory.

Reads retrieval examples and the catalog (Arrow tables in the contract of ``sql/training``); writes
nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.core.tables import as_table, require_columns
from pipelines.training.two_tower.encoder import FeatureEncoder, Vocabularies, build_vocabularies
from pipelines.training.two_tower.features import (
    EMBED_BATCH,
    ITEM_COLUMNS,
    USER_COLUMNS,
    cap_examples_per_user,
    item_features,
    string_column,
    user_features,
)

log = logging.getLogger(__name__)


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
    catalog_ids = string_column(catalog, "item_id", "catalog")
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
    vocab = build_vocabularies(capped, candidates, config)
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
