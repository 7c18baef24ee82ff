"""Ranker scoring: feature-list checks and compiled scoring against LightGBM."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipelines.core.lake import Lake
from pipelines.training.ranker import model as model_module
from pipelines.training.ranker.export import load_ranker, save_ranker
from pipelines.training.ranker.features import FEATURE_NAMES, RankingPairs, ranker_features
from pipelines.training.ranker.model import FeatureMismatchError
from pipelines.training.registry import new_version
from tests.pipelines.training.ranker.synthetic_ranking import COL, CONFIG


def test_scoring_with_another_feature_list_fails_loudly(synthetic):
    _, _, result = synthetic
    ranker = result.ranker
    renamed = [*FEATURE_NAMES[:-1], "user_language_match"]
    with pytest.raises(FeatureMismatchError) as info:
        ranker.score(np.zeros((2, len(renamed))), renamed)
    assert "missing ['user_account_age_days']" in str(info.value)
    assert "unexpected ['user_language_match']" in str(info.value)
    with pytest.raises(FeatureMismatchError, match="another order"):
        ranker.score(np.zeros((2, len(FEATURE_NAMES))), list(reversed(FEATURE_NAMES)))
    with pytest.raises(ValueError, match=r"features must be \(n, 15\)"):
        ranker.score(np.zeros((2, 3)))


def test_compiled_scoring_orders_like_lightgbm_and_reuses_its_cache(synthetic, tmp_path):
    rows, scorer, result = synthetic
    lake = Lake(str(tmp_path / "lake"))
    version = new_version(dt.date(2026, 11, 22), CONFIG.model_dump())
    save_ranker(result, lake, version)
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    x = ranker_features(RankingPairs.from_examples(rows, score, rank), CONFIG.retrieval_depth)
    x[::7, COL["ctr_short"]] = np.nan  # missing values take LightGBM's default branches in both
    booster_scores = load_ranker(lake, version).score(x)
    cache = tmp_path / "compiled"
    compiled = load_ranker(lake, version).compile(cache)
    assert len(list(cache.glob("ranker-*.so"))) == 1
    got = compiled.score(x)
    np.testing.assert_allclose(got, booster_scores, rtol=0, atol=1e-9)
    assert np.unique(booster_scores).size > 10, "the model separates rows"
    again = load_ranker(lake, version).compile(cache)
    np.testing.assert_array_equal(again.score(x), got)
    assert len(list(cache.iterdir())) == 1, "the second compile read the cache and left nothing behind"
    with pytest.raises(FeatureMismatchError, match="another order"):
        compiled.score(x, list(reversed(FEATURE_NAMES)))


@pytest.mark.parametrize("compiled", [False, True], ids=["lightgbm", "compiled"])
def test_scoring_pairs_block_by_block_gives_the_scores_of_the_whole_matrix(
    synthetic, tmp_path, monkeypatch, compiled
):
    rows, scorer, result = synthetic
    lake = Lake(str(tmp_path / "lake"))
    version = new_version(dt.date(2026, 11, 22), CONFIG.model_dump())
    save_ranker(result, lake, version)
    ranker = load_ranker(lake, version)
    if compiled:
        ranker.compile(tmp_path / "compiled")
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    pairs = RankingPairs.from_examples(rows, score, rank)
    whole = ranker.score(
        ranker_features(pairs, CONFIG.retrieval_depth, np.float64 if compiled else np.float32)
    )
    monkeypatch.setattr(model_module, "SCORE_ROWS", 333)
    assert len(pairs) > 3 * 333
    np.testing.assert_array_equal(ranker.score_pairs(pairs), whole)
