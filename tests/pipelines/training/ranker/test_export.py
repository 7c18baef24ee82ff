"""Ranker export and load through the lake."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, LakePaths
from pipelines.training.ranker.export import FEATURES_FILE, load_ranker, save_ranker
from pipelines.training.ranker.features import FEATURE_NAMES, RankingPairs, ranker_features
from pipelines.training.ranker.model import FeatureMismatchError
from pipelines.training.registry import CONFIG_FILE, new_version, seal_export
from tests.pipelines.training.ranker.synthetic_ranking import CONFIG


def test_save_and_load_give_identical_scores(synthetic, tmp_path):
    rows, scorer, result = synthetic
    lake = Lake(str(tmp_path / "lake"))
    version = new_version(dt.date(2026, 11, 22), CONFIG.model_dump())
    save_ranker(result, lake, version)
    loaded = load_ranker(lake, version)
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    x = ranker_features(RankingPairs.from_examples(rows, score, rank), CONFIG.retrieval_depth)
    np.testing.assert_array_equal(loaded.score(x), result.ranker.score(x))
    assert loaded.feature_names == FEATURE_NAMES
    assert loaded.retrieval_depth == CONFIG.retrieval_depth
    assert loaded.metrics == result.metrics
    with pytest.raises(FileExistsError, match="already holds an exported ranker"):
        save_ranker(result, lake, version)
    with pytest.raises(FileNotFoundError, match=r"config.json missing"):
        load_ranker(lake, new_version(dt.date(2026, 11, 23), {}))


def test_loading_a_model_whose_stored_feature_list_differs_fails(synthetic, tmp_path):
    _, _, result = synthetic
    lake = Lake(str(tmp_path / "lake"))
    version = new_version(dt.date(2026, 11, 22), CONFIG.model_dump())
    save_ranker(result, lake, version)
    # An export whose files are intact (checksums sealed) but disagree with each other.
    model_dir = LakePaths.model_dir(RANKER, version)
    lake.write_json(f"{model_dir}/{FEATURES_FILE}", list(FEATURE_NAMES[1:]))
    config = lake.read_json(f"{model_dir}/{CONFIG_FILE}")
    lake.rm(f"{model_dir}/{CONFIG_FILE}")
    seal_export(lake, RANKER, version, {k: v for k, v in config.items() if k != "checksums"})
    with pytest.raises(
        FeatureMismatchError, match=r"LightGBM model file has 15; unexpected \['retrieval_score'\]"
    ):
        load_ranker(lake, version)
