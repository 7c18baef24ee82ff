"""The ranker's features: values by hand, training rows and serving candidates alike, bad input named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.training.ranker import features as features_module
from pipelines.training.ranker.features import FEATURE_NAMES, ItemFeatures, RankingPairs, ranker_features
from tests.pipelines.training.ranker.synthetic_ranking import COL, CONFIG


def _users() -> pa.Table:
    return pa.table(
        {
            "user_id": ["u0", "u1"],
            "selected_tags": [["python", "rust", "python"], []],
            "affinity_tags": [["python", "django", "go"], None],
            "affinity_weights": [[0.5, 0.3, 0.2], None],
            "activity_lookback": [12, 0],
            "activity_short": [4, 0],
            "ctr_lookback": [0.25, 0.1],
            "account_age_days": [100.0, 2.5],
        }
    )


def _items() -> pa.Table:
    return pa.table(
        {
            "item_id": ["i0", "i1", "i2"],
            "tags": [["python", "django"], ["go", "rust", "python"], None],
            "item_age_days": [0.5, 3.0, 10.0],
            "impressions_short": pa.array([100, 40, 0], pa.int64()),
            "engagements_short": [10, 4, 0],
            "engagements_lookback": [20, 9, 0],
            "ctr_short": [0.1, None, 0.05],
            "source_ctr_lookback": [0.2, 0.3, 0.4],
            "author_ctr_lookback": [0.5, 0.6, 0.7],
        }
    )


def _candidates() -> pa.Table:
    return pa.table(
        {
            "user_id": ["u0", "u0", "u0", "u1"],
            "item_id": ["i0", "i1", "i2", "i1"],
            "retrieval_score": [0.9, 0.8, 0.7, 0.6],
            "retrieval_rank": [1, 150, 3, 101],
        }
    )


def _scored_pairs(synthetic) -> RankingPairs:
    """The labelled rows of the synthetic fixture with the retrieval score and rank of its scorer."""
    rows, scorer, _ = synthetic
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    return RankingPairs.from_examples(rows, score, rank)


def test_ranker_features_hand_computed():
    pairs = RankingPairs.from_candidates(_candidates(), _users(), _items())
    x = ranker_features(pairs, retrieval_depth=100)
    assert x.shape == (4, len(FEATURE_NAMES)) and x.dtype == np.float32
    # u0 affinity: python 0.5, django 0.3, go 0.2; u0 selected: python, rust (python listed twice).
    # (u0, i0 [python, django]): 0.5 + 0.3 = 0.8 affinity; selected python -> 1
    # (u0, i1 [go, rust, python]): 0.2 + 0.5 = 0.7 affinity; selected rust, python -> 2
    # (u0, i2 no tags): 0, 0.  (u1 with no affinity or selected tags, i1): 0, 0
    np.testing.assert_allclose(x[:, COL["tag_affinity"]], [0.8, 0.7, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(x[:, COL["selected_tag_overlap"]], [1, 2, 0, 0])
    # Ranks beyond depth 100 become 101.
    np.testing.assert_array_equal(x[:, COL["retrieval_rank"]], [1, 101, 3, 101])
    np.testing.assert_allclose(x[:, COL["retrieval_score"]], [0.9, 0.8, 0.7, 0.6], rtol=1e-6)
    # Numbers come from the right rows; a null stays missing.
    np.testing.assert_array_equal(x[:, COL["impressions_short"]], [100, 40, 0, 40])
    np.testing.assert_allclose(x[:, COL["ctr_short"]], [0.1, np.nan, 0.05, np.nan], rtol=1e-6)
    np.testing.assert_allclose(x[:, COL["user_ctr_lookback"]], [0.25, 0.25, 0.25, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(x[:, COL["user_activity_lookback"]], [12, 12, 12, 0])


def test_training_rows_and_serving_candidates_give_the_same_features():
    users, items, cands = _users(), _items(), _candidates()
    u = [0, 0, 0, 1]
    i = [0, 1, 2, 1]
    rows = pa.table(
        {
            **{c: users.column(c).take(pa.array(u)) for c in users.column_names},
            **{c: items.column(c).take(pa.array(i)) for c in items.column_names},
        }
    )
    train_x = ranker_features(
        RankingPairs.from_examples(
            rows, cands["retrieval_score"].to_numpy(), cands["retrieval_rank"].to_numpy()
        ),
        retrieval_depth=100,
    )
    serve_x = ranker_features(RankingPairs.from_candidates(cands, users, items), retrieval_depth=100)
    np.testing.assert_array_equal(train_x, serve_x)


@pytest.mark.parametrize("dense_cells", [0, 1 << 24], ids=["sorted-keys", "dense-table"])
def test_tag_overlaps_are_the_same_from_sorted_keys_and_a_dense_table(synthetic, monkeypatch, dense_cells):
    pairs = _scored_pairs(synthetic)
    reference = ranker_features(pairs, CONFIG.retrieval_depth)
    monkeypatch.setattr(features_module, "_DENSE_TAG_TABLE_CELLS", dense_cells)
    got = ranker_features(pairs, CONFIG.retrieval_depth)
    np.testing.assert_array_equal(got, reference)
    assert (got[:, COL["tag_affinity"]] > 0).mean() > 0.1 and (got[:, COL["selected_tag_overlap"]] > 0).any()
    hand = ranker_features(RankingPairs.from_candidates(_candidates(), _users(), _items()), 100)
    np.testing.assert_allclose(hand[:, COL["tag_affinity"]], [0.8, 0.7, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(hand[:, COL["selected_tag_overlap"]], [1, 2, 0, 0])


def test_a_shard_without_candidates_gives_an_empty_matrix():
    x = ranker_features(RankingPairs.from_candidates(_candidates().slice(0, 0), _users(), _items()), 100)
    assert x.shape == (0, len(FEATURE_NAMES))


def test_candidate_with_unknown_item_is_named():
    cands = _candidates().set_column(1, "item_id", pa.array(["i0", "i1", "i9", "i1"]))
    with pytest.raises(ValueError, match=r"candidate row 2: item_id 'i9' is not in the item rows"):
        RankingPairs.from_candidates(cands, _users(), _items())


def test_duplicate_user_rows_are_rejected():
    users = pa.concat_tables([_users(), _users().slice(0, 1)])
    with pytest.raises(ValueError, match="user_id must be unique"):
        RankingPairs.from_candidates(_candidates(), users, _items())


def test_affinity_lists_of_different_lengths_name_the_user_row():
    users = _users().set_column(3, "affinity_weights", pa.array([[0.5, 0.3], None], pa.list_(pa.float64())))
    pairs = RankingPairs.from_candidates(_candidates(), users, _items())
    with pytest.raises(ValueError, match=r"user row 0: 3 affinity_tags but 2 affinity_weights"):
        ranker_features(pairs, retrieval_depth=100)


def test_a_double_matrix_holds_the_same_float32_values(synthetic):
    pairs = _scored_pairs(synthetic)
    single = ranker_features(pairs, CONFIG.retrieval_depth)
    double = ranker_features(pairs, CONFIG.retrieval_depth, np.float64)
    assert double.dtype == np.float64 and double.flags.c_contiguous
    np.testing.assert_array_equal(double, single.astype(np.float64))


def test_pairs_read_the_item_features_of_the_whole_catalog_built_once():
    # A serving shard builds the catalog's item features once and every batch points into them.
    catalog = ItemFeatures.from_rows(_items())
    cands = _candidates()
    pairs = RankingPairs(
        users=_users(),
        items=catalog,
        user_row=np.array([0, 0, 0, 1]),
        item_row=np.array([0, 1, 2, 1]),
        retrieval_score=cands["retrieval_score"].to_numpy().astype(np.float32),
        retrieval_rank=np.array([1, 150, 3, 101]),
    )
    expected = ranker_features(RankingPairs.from_candidates(cands, _users(), _items()), 100)
    np.testing.assert_array_equal(ranker_features(pairs, 100), expected)
    assert catalog.tag_codes[catalog.tag_indptr[2] : catalog.tag_indptr[3]].size == 0  # i2 has no tags
    assert sorted(catalog.vocabulary.to_pylist()) == ["django", "go", "python", "rust"]
