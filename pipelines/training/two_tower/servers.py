"""The towers as exportable modules that take raw string features (``UserServer``, ``ItemServer``) and
:class:`Towers`, batched embedding functions over raw tables, from a trained or a reloaded model.

Reads raw user and post tables; writes nothing (:mod:`pipelines.training.two_tower.export` saves them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import tensorflow as tf

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.encoder import FeatureEncoder
from pipelines.training.two_tower.features import EMBED_BATCH, ITEM_COLUMNS, item_features, user_features
from pipelines.training.two_tower.towers import ItemTower, UserTower


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


def build_towers(
    user_fn: Callable, item_fn: Callable, config: TwoTowerConfig, version: str | None, owners: tuple[Any, ...]
) -> Towers:
    """Embedding functions over raw tables around the ``embed`` functions of the two serving modules.

    Args:
        user_fn: raw user features -> embeddings (``UserServer.embed``, trained or reloaded).
        item_fn: raw post features -> embeddings (``ItemServer.embed``).
        config: the model's config (list widths of the raw features).
        version: the exported version, None for a model trained in this process.
        owners: the objects holding the functions' variables.

    Returns:
        The towers.
    """
    # The functions close over ``owners`` so the models holding their variables live as long as they do,
    # even when the Towers object itself is a temporary (``load_towers(...).embed_items(...)``).
    return Towers(
        embed_users=lambda users, _owners=owners: _embed(user_fn, user_features(users, config)),
        embed_items=lambda items, _owners=owners: _embed(item_fn, item_features(items, config)),
        config=config,
        version=version,
        owners=owners,
    )
