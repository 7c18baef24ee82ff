"""A small synthetic ranking world for the ranker tests: labelled impressions whose label depends on
features a stand-in two-tower score does not see."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.core.model_settings import RankerConfig
from pipelines.training.ranker.features import FEATURE_NAMES

COL = {name: j for j, name in enumerate(FEATURE_NAMES)}

TAGS = tuple(f"t{j}" for j in range(8))


def synthetic_examples(seed: int = 3) -> tuple[pa.Table, np.ndarray, dict[str, int], dict[str, int]]:
    """A small world where the label depends on features the two-tower stand-in does not see.

    Each user likes two tags; a post's click chance rises with the number of liked tags it carries, its
    quality (visible as ``ctr_short``) and its freshness. The stand-in retrieval score knows only the tag
    match (plus noise), so a ranker that also reads ``ctr_short`` and ``item_age_days`` can order better.

    Returns:
        rows, the (n_users, n_items) retrieval score matrix, and user/item id -> index maps.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items, n_days, per_group, n_tags = 120, 200, 5, 10, len(TAGS)
    liked = np.stack([rng.choice(n_tags, 2, replace=False) for _ in range(n_users)])
    other = (liked[:, 0] + 1 + rng.integers(0, n_tags - 1, n_users)) % n_tags
    other = np.where(other == liked[:, 1], (other + 1) % n_tags, other)
    other = np.where(other == liked[:, 0], (other + 1) % n_tags, other)
    item_tags = [rng.choice(n_tags, int(rng.integers(1, 3)), replace=False) for _ in range(n_items)]
    quality = rng.random(n_items)
    age = rng.random(n_items) * 10
    match = np.array([[len(set(t) & set(liked[u])) for t in item_tags] for u in range(n_users)], dtype=float)
    retrieval = match + rng.normal(0, 1.0, size=match.shape)

    users = np.repeat(np.arange(n_users), n_days * per_group)
    days = np.tile(np.repeat(np.arange(n_days), per_group), n_users)
    items = np.concatenate([rng.choice(n_items, per_group, replace=False) for _ in range(n_users * n_days)])
    logit = -2.0 + 1.5 * match[users, items] + 3.0 * (quality[items] - 0.5) - 0.25 * age[items]
    click = rng.random(len(users)) < 1 / (1 + np.exp(-logit))
    label = np.where(click, rng.integers(1, 5, len(users)), 0)
    start = dt.date(2026, 11, 1)
    n = len(users)
    rows = pa.table(
        {
            "user_id": [f"u{u:03d}" for u in users],
            "item_id": [f"i{i:03d}" for i in items],
            "ds": pa.array([start + dt.timedelta(days=int(d)) for d in days], pa.date32()),
            "position": np.tile(np.arange(per_group), n_users * n_days),
            "label": pa.array(label, pa.int32()),
            "split": np.where(days >= n_days - 2, "eval", "train"),
            "tags": [[TAGS[t] for t in item_tags[i]] for i in items],
            "item_age_days": age[items],
            "impressions_short": np.full(n, 50),
            "engagements_short": np.round(quality[items] * 10).astype(np.int64),
            "engagements_lookback": np.round(quality[items] * 30).astype(np.int64),
            "ctr_short": 0.02 + 0.2 * quality[items] + rng.normal(0, 0.01, n),
            "source_ctr_lookback": np.full(n, 0.1),
            "author_ctr_lookback": np.full(n, 0.1),
            "selected_tags": [[TAGS[liked[u, 0]]] for u in users],
            "affinity_tags": [[TAGS[liked[u, 0]], TAGS[liked[u, 1]], TAGS[other[u]]] for u in users],
            "affinity_weights": [[0.5, 0.3, 0.2]] * n,
            "activity_lookback": np.full(n, 5),
            "activity_short": np.full(n, 2),
            "ctr_lookback": np.full(n, 0.1),
            "account_age_days": np.full(n, 30.0),
        }
    )
    user_index = {f"u{u:03d}": u for u in range(n_users)}
    item_index = {f"i{i:03d}": i for i in range(n_items)}
    return rows, retrieval, user_index, item_index


CONFIG = RankerConfig(
    num_boost_round=80, early_stopping_rounds=10, retrieval_depth=50, num_leaves=15, num_threads=2
)


def stand_in_scorer(retrieval: np.ndarray, user_index: dict[str, int], item_index: dict[str, int]):
    """A scorer of (user, item) pairs from a dense retrieval matrix: its score, and the rank of the item
    within the user's whole-catalog order, capped at the ranker's depth + 1."""
    # Rank of every item within the user's whole-catalog order, capped at depth + 1.
    order = np.argsort(-retrieval, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, retrieval.shape[1] + 1)[None, :], axis=1)
    rank = np.minimum(rank, CONFIG.retrieval_depth + 1)

    def scores(user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.array([user_index[x] for x in user_ids])
        i = np.array([item_index[x] for x in item_ids])
        return retrieval[u, i], rank[u, i]

    return scores
