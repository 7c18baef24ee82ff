"""Ranker stage: a LightGBM lambdarank model that re-orders each user's retrieved candidates.

The modules: ``features`` (pairs and their feature matrix, shared by training and serving), ``model`` (the
scoring model), ``train`` (training and hold-out evaluation) and ``export`` (lake I/O). This package
declares the entry points the other stages use.
"""

from pipelines.training.ranker.export import load_ranker, save_ranker
from pipelines.training.ranker.features import (
    FEATURE_NAMES,
    ITEM_COLUMNS,
    ITEM_NUMERIC_FEATURES,
    USER_COLUMNS,
    ItemFeatures,
    RankingPairs,
    ranker_features,
)
from pipelines.training.ranker.model import FeatureMismatchError, Ranker
from pipelines.training.ranker.train import RankerResult, evaluate_ranker, train_ranker

__all__ = [
    "FEATURE_NAMES",
    "ITEM_COLUMNS",
    "ITEM_NUMERIC_FEATURES",
    "USER_COLUMNS",
    "FeatureMismatchError",
    "ItemFeatures",
    "Ranker",
    "RankerResult",
    "RankingPairs",
    "evaluate_ranker",
    "load_ranker",
    "ranker_features",
    "save_ranker",
    "train_ranker",
]
