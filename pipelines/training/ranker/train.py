"""Training and evaluation of the ranker: a LightGBM lambdarank model that re-orders each user's retrieved
candidates, compared with the retrieval-only order on the same eval groups.

The ranker learns from logged impressions: every (user, post) pair the feed showed, graded by what the
user did next (0 shown only, 1 click, 2 upvote, 3 bookmark, 4 share). A query group is one user's
impressions of one day. Reads rows of ``sql/training/ranking_dataset.sql`` (``split`` says train or eval)
plus the two-tower score and rank of each row's pair; writes nothing (see
:mod:`pipelines.training.ranker.export`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.model_settings import RankerConfig
from pipelines.core.tables import require_columns
from pipelines.training.metrics import average_precision, graded_ndcg_at_k
from pipelines.training.ranker.features import (
    FEATURE_NAMES,
    ITEM_COLUMNS,
    USER_COLUMNS,
    RankingPairs,
    numeric_column,
    ranker_features,
)
from pipelines.training.ranker.model import Ranker

log = logging.getLogger(__name__)

EXAMPLE_KEY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ds", "label", "split")
MAX_LABEL = 4

# (user_ids, item_ids) of the training rows -> (two-tower score, rank) of each pair.
RetrievalScorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class RankerResult:
    """A freshly trained ranker with its hold-out metrics, gain importance per feature and settings."""

    ranker: Ranker
    metrics: dict[str, float]
    config: RankerConfig
    importance: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _order_metrics(
    prefix: str, labels: np.ndarray, scores: np.ndarray, sizes: np.ndarray
) -> dict[str, float]:
    return {
        f"{prefix}ndcg_at_10": float(graded_ndcg_at_k(labels, scores, sizes, 10).mean()),
        f"{prefix}ndcg_at_5": float(graded_ndcg_at_k(labels, scores, sizes, 5).mean()),
        f"{prefix}map": float(average_precision(labels, scores, sizes).mean()),
    }


@dataclass(frozen=True)
class _Split:
    rows: pa.Table
    group_sizes: np.ndarray
    source_rows: np.ndarray  # row numbers in the caller's table
    groups_without_positive: int

    @property
    def labels(self) -> np.ndarray:
        return self.rows.column("label").to_numpy()


def _prepare_split(rows: pa.Table, split: str) -> _Split:
    """Rows of one split sorted into (ds, user) groups, keeping only groups with a positive label.

    Rows are sorted by ``(ds, user_id, item_id)``, so score ties break by post id, never by the logged
    position or the label.
    """
    source = np.flatnonzero(
        pc.equal(rows.column("split"), split).fill_null(False).to_numpy(zero_copy_only=False)
    )
    part = rows.take(pa.array(source))
    order = pc.sort_indices(
        part, sort_keys=[("ds", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")]
    ).to_numpy()
    part = part.take(pa.array(order))
    source = source[order]
    keys = pd.DataFrame({"ds": part.column("ds").to_pandas(), "user_id": part.column("user_id").to_pandas()})
    new_group = np.r_[True, (keys.iloc[1:].to_numpy() != keys.iloc[:-1].to_numpy()).any(axis=1)]
    starts = np.flatnonzero(new_group[: part.num_rows])
    labels = part.column("label").to_numpy()
    has_positive = np.maximum.reduceat(labels, starts) > 0 if len(starts) else np.zeros(0, dtype=bool)
    sizes = np.diff(np.r_[starts, len(labels)])
    keep_rows = np.repeat(has_positive, sizes)
    return _Split(
        rows=part.filter(pa.array(keep_rows)),
        group_sizes=sizes[has_positive],
        source_rows=source[keep_rows],
        groups_without_positive=int((~has_positive).sum()),
    )


def _check_examples(rows: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(rows, pd.DataFrame):
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    require_columns(rows, (*EXAMPLE_KEY_COLUMNS, *ITEM_COLUMNS, *USER_COLUMNS), "ranking examples")
    for key in ("user_id", "item_id", "ds", "split"):
        if rows.column(key).null_count:
            first = int(np.flatnonzero(rows.column(key).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"ranking example row {first}: {key} is null")
    labels = rows.column("label")
    if not pa.types.is_integer(labels.type):
        raise ValueError(f"ranking examples: label must be an integer column, got {labels.type}")
    values = labels.fill_null(-1).to_numpy()
    bad = np.flatnonzero((values < 0) | (values > MAX_LABEL))
    if len(bad):
        raise ValueError(
            f"ranking example row {bad[0]}: label must be 0..{MAX_LABEL}, got {labels[int(bad[0])].as_py()!r}"
        )
    split = rows.column("split").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isin(split, ["train", "eval"]))
    if len(bad):
        raise ValueError(
            f"ranking example row {bad[0]}: split must be 'train' or 'eval', got {split[bad[0]]!r}"
        )
    return rows


def _require_groups(part: _Split, name: str) -> None:
    if len(part.group_sizes) == 0:
        raise ValueError(
            f"ranking examples: the {name} split has no (user, day) group with a positive label "
            f"({part.groups_without_positive} groups without one)"
        )


def _retrieval_inputs(
    rows: pa.Table, source_rows: np.ndarray, retrieval_scores: RetrievalScorer | np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two-tower score and rank of the pairs at ``source_rows`` of ``rows``, checked."""
    if callable(retrieval_scores):
        picked = rows.take(pa.array(source_rows))
        user_ids = picked.column("user_id").to_numpy(zero_copy_only=False)
        item_ids = picked.column("item_id").to_numpy(zero_copy_only=False)
        score, rank = retrieval_scores(user_ids, item_ids)
        score, rank = np.asarray(score, dtype=np.float64), np.asarray(rank, dtype=np.float64)
        where = "returned by retrieval_scores for"
    else:
        array = np.asarray(retrieval_scores, dtype=np.float64)
        if array.shape != (rows.num_rows, 2):
            raise ValueError(
                f"retrieval_scores array must be (n_rows, 2) = ({rows.num_rows}, 2) holding score and rank, "
                f"got shape {array.shape}"
            )
        score, rank = array[source_rows, 0], array[source_rows, 1]
        where = "given for"
    if score.shape != source_rows.shape or rank.shape != source_rows.shape:
        raise ValueError(
            f"retrieval_scores returned shapes {score.shape} and {rank.shape} for {len(source_rows)} pairs"
        )
    bad = np.flatnonzero(~np.isfinite(score))
    if len(bad):
        raise ValueError(
            f"retrieval score {where} ranking example row {source_rows[bad[0]]} is {score[bad[0]]}"
        )
    bad = np.flatnonzero((rank < 1) | (rank > depth + 1) | (rank != np.round(rank)))
    if len(bad):
        raise ValueError(
            f"retrieval rank {where} ranking example row {source_rows[bad[0]]} is {rank[bad[0]]}; expected "
            f"an integer in 1..{depth + 1} (retrieval_depth + 1 = outside the top {depth})"
        )
    return score, rank


def _holdout_metrics(
    ranker: Ranker, evaluation: _Split, features: np.ndarray, retrieval_score: np.ndarray
) -> dict[str, float]:
    """Ranker order vs retrieval-only order (and the logged feed order when known) on the eval groups."""
    labels, sizes = evaluation.labels, evaluation.group_sizes
    metrics = _order_metrics("", labels, ranker.score(features), sizes)
    metrics |= _order_metrics("retrieval_", labels, retrieval_score, sizes)
    if "position" in evaluation.rows.column_names:
        position = numeric_column(evaluation.rows, "position")
        metrics |= _order_metrics("logged_", labels, -np.nan_to_num(position, nan=np.inf), sizes)
    metrics |= {
        "ndcg_at_10_lift": metrics["ndcg_at_10"] - metrics["retrieval_ndcg_at_10"],
        "eval_rows": float(len(labels)),
        "eval_groups": float(len(sizes)),
        "eval_groups_without_positive": float(evaluation.groups_without_positive),
    }
    return metrics


def evaluate_ranker(
    ranker: Ranker,
    rows: pa.Table | pd.DataFrame,
    retrieval_scores: RetrievalScorer | np.ndarray,
    config: RankerConfig,
) -> dict[str, float]:
    """Metrics of ``ranker`` on the eval split of ``rows``, e.g. the champion on a challenger's hold-out.

    The champion gate compares a challenger with the champion on the SAME hold-out; this gives the
    champion's side of that comparison with exactly the metrics :func:`train_ranker` reports.

    Args:
        ranker: a trained (typically loaded) ranker.
        rows: ranking examples as for :func:`train_ranker`; only ``split == 'eval'`` rows are used.
        retrieval_scores: as for :func:`train_ranker` (a callable sees only the eval pairs it needs).
        config: ``retrieval_depth``, the bound the given ranks are checked against.

    Returns:
        ``ndcg_at_10``, ``ndcg_at_5``, ``map``, the ``retrieval_`` (and ``logged_``) baselines,
        ``ndcg_at_10_lift`` and the eval row and group counts.

    Raises:
        ValueError: malformed rows or retrieval inputs, or no eval group with a positive label.
        FeatureMismatchError: the ranker was trained on another feature list than this code builds.
    """
    rows = _check_examples(rows)
    evaluation = _prepare_split(rows, "eval")
    _require_groups(evaluation, "eval")
    score, rank = _retrieval_inputs(rows, evaluation.source_rows, retrieval_scores, config.retrieval_depth)
    features = ranker_features(
        RankingPairs.from_examples(evaluation.rows, score, rank), ranker.retrieval_depth
    )
    return _holdout_metrics(ranker, evaluation, features, score)


def train_ranker(
    rows: pa.Table | pd.DataFrame,
    retrieval_scores: RetrievalScorer | np.ndarray,
    config: RankerConfig,
) -> RankerResult:
    """Train the lambdarank ranker on logged impressions and compare it with retrieval-only order.

    Query groups are one user's impressions of one day. Groups without any positive label give
    lambdarank no pair to learn from and NDCG is undefined for them, so they are dropped from both splits
    (and counted). Boosting stops early on NDCG@10 of the eval split, and the same eval groups then give
    the reported metrics, for the ranker and for the two-tower order (rows sorted by
    ``retrieval_score``); choosing the number of trees there makes the ranker's figure slightly
    optimistic.

    Args:
        rows: rows of ``sql/training/ranking_dataset.sql``: ``user_id, item_id, ds, label, split`` and
            the item and user feature columns (``ITEM_COLUMNS``, ``USER_COLUMNS``); ``position``
            optional (adds the logged feed order as a baseline).
        retrieval_scores: the champion two-tower's score and rank of each row's pair, either a callable
            ``(user_ids, item_ids) -> (score, rank)`` over aligned arrays (called once, with the pairs
            of the kept groups only), or an ``(n_rows, 2)`` array of score and rank aligned with
            ``rows``. The rank is the post's 1-based rank within the user's top-``retrieval_depth``
            two-tower retrieval, ``retrieval_depth + 1`` when it is outside it.
        config: tree shape, learning rate, rounds, early stopping, threads, seed and retrieval depth.

    Returns:
        The ranker (trees up to the best iteration) with metrics: ``ndcg_at_10`` (the key the champion
        gate reads), ``ndcg_at_5``, ``map``, the same with a ``retrieval_`` prefix for the two-tower
        order (and ``logged_`` for the logged feed order when ``position`` is given),
        ``ndcg_at_10_lift``, row, group and dropped-group counts, ``best_iteration``.

    Raises:
        ValueError: missing columns, bad labels, splits or retrieval inputs (the message names the row),
            or a split left without any group that has a positive label.
    """
    started = time.perf_counter()
    rows = _check_examples(rows)
    train, evaluation = _prepare_split(rows, "train"), _prepare_split(rows, "eval")
    _require_groups(train, "train")
    _require_groups(evaluation, "eval")
    depth = config.retrieval_depth
    kept = np.concatenate([train.source_rows, evaluation.source_rows])
    score, rank = _retrieval_inputs(rows, kept, retrieval_scores, depth)
    n_train = len(train.source_rows)
    x_train = ranker_features(RankingPairs.from_examples(train.rows, score[:n_train], rank[:n_train]), depth)
    x_eval = ranker_features(
        RankingPairs.from_examples(evaluation.rows, score[n_train:], rank[n_train:]), depth
    )
    elapsed = time.perf_counter() - started
    log.info(
        "ranker examples: %d train and %d eval rows ready in %.2f s (%.0f rows/s)",
        len(x_train),
        len(x_eval),
        elapsed,
        (len(x_train) + len(x_eval)) / max(elapsed, 1e-9),
    )

    params: dict[str, Any] = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.num_threads,
        "verbosity": -1,
    }
    names = list(FEATURE_NAMES)
    train_set = lgb.Dataset(x_train, label=train.labels, group=train.group_sizes, feature_name=names)
    eval_set = lgb.Dataset(x_eval, label=evaluation.labels, group=evaluation.group_sizes, reference=train_set)
    fit_started = time.perf_counter()
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[eval_set],
        valid_names=["eval"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees up to the best iteration, so the saved and the in-memory model are the same.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    ranker = Ranker(booster, FEATURE_NAMES, depth, num_threads=config.num_threads)
    fit_seconds = time.perf_counter() - fit_started

    metrics = _holdout_metrics(ranker, evaluation, x_eval, score[n_train:])
    metrics |= {
        "train_rows": float(len(x_train)),
        "train_groups": float(len(train.group_sizes)),
        "train_groups_without_positive": float(train.groups_without_positive),
        "best_iteration": float(best),
        "fit_seconds": round(fit_seconds, 3),
    }
    ranker.metrics = dict(metrics)
    gains = booster.feature_importance(importance_type="gain")
    importance = {name: float(g) for name, g in zip(FEATURE_NAMES, gains, strict=True)}
    log.info(
        "ranker: %d trees in %.1f s; eval NDCG@10 %.4f vs retrieval-only %.4f over %d groups",
        best,
        fit_seconds,
        metrics["ndcg_at_10"],
        metrics["retrieval_ndcg_at_10"],
        len(evaluation.group_sizes),
    )
    return RankerResult(ranker=ranker, metrics=metrics, config=config, importance=importance, params=params)
