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
    assert (catalog.tag_matrix[2] == -1).all()  # i2 has no tags
    assert sorted(catalog.vocabulary.to_pylist()) == ["django", "go", "python", "rust"]


def _random_tag_world(seed: int) -> tuple[pa.Table, pa.Table, np.ndarray, np.ndarray]:
    """Users and posts with random tag lists: repeats, nulls, tags only users list, posts without tags;
    weights whose sums depend on their order."""
    rng = np.random.default_rng(seed)
    tags = [f"t{i}" for i in range(12)]

    def some_tags(most: int, extra: str | None = None) -> list[str | None] | None:
        if rng.random() < 0.1:
            return None
        return rng.choice([*tags, extra, None], size=rng.integers(0, most + 1)).tolist()

    n_users, n_items = 40, 60
    affinity = [some_tags(6, "user-only") for _ in range(n_users)]
    users = pa.table(
        {
            "user_id": [f"u{i}" for i in range(n_users)],
            "selected_tags": [some_tags(5, "user-only") for _ in range(n_users)],
            "affinity_tags": affinity,
            "affinity_weights": [
                None if a is None else rng.choice([0.1, 0.3, -0.7, 0.45, np.nan], size=len(a)).tolist()
                for a in affinity
            ],
            "activity_lookback": rng.integers(0, 50, n_users),
            "activity_short": rng.integers(0, 5, n_users),
            "ctr_lookback": rng.random(n_users),
            "account_age_days": rng.random(n_users) * 100,
        }
    )
    items = pa.table(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "tags": [some_tags(7) for _ in range(n_items)],
            **{c: rng.random(n_items) for c in features_module.ITEM_NUMERIC_FEATURES.values()},
        }
    )
    n_pairs = 500
    return users, items, rng.integers(0, n_users, n_pairs), rng.integers(0, n_items, n_pairs)


def _overlaps_one_pair_at_a_time(
    users: pa.Table, items: pa.Table, user: int, item: int
) -> tuple[float, float]:
    """The tag overlaps as the docstring defines them, summed in the order of the post's tags."""
    post_tags = items.column("tags")[item].as_py() or []
    aff = users.column("affinity_tags")[user].as_py() or []
    weights = users.column("affinity_weights")[user].as_py() or []
    selected = set(users.column("selected_tags")[user].as_py() or [])
    affinity, overlap = 0.0, 0.0
    for tag in post_tags:
        weight = 0.0
        for listed, w in zip(aff, weights, strict=True):
            if tag is not None and listed == tag:
                weight += 0.0 if w is None or np.isnan(w) else w
        affinity += weight
        overlap += float(tag is not None and tag in selected)
    return affinity, overlap


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dense_cells", [0, 1 << 24], ids=["sorted-keys", "dense-table"])
def test_tag_overlaps_equal_a_pair_by_pair_sum_in_small_chunks_too(monkeypatch, seed, dense_cells):
    users, items, user_row, item_row = _random_tag_world(seed)
    monkeypatch.setattr(features_module, "_DENSE_TAG_TABLE_CELLS", dense_cells)
    pairs = RankingPairs(
        users=users,
        items=ItemFeatures.from_rows(items),
        user_row=user_row,
        item_row=item_row,
        retrieval_score=np.linspace(1, 0, len(user_row)),
        retrieval_rank=np.arange(1, len(user_row) + 1),
    )
    whole = ranker_features(pairs, 100, np.float64)
    expected = np.array(
        [_overlaps_one_pair_at_a_time(users, items, u, i) for u, i in zip(user_row, item_row, strict=True)]
    )
    np.testing.assert_array_equal(whole[:, COL["tag_affinity"]], expected[:, 0].astype(np.float32))
    np.testing.assert_array_equal(whole[:, COL["selected_tag_overlap"]], expected[:, 1])
    assert (expected[:, 0] != 0).mean() > 0.15 and (expected[:, 0] < 0).any() and (expected[:, 1] > 1).any()
    # Chunks of 7 rows (the last one short) fill the same matrix, block by block or whole.
    monkeypatch.setattr(features_module, "_CHUNK_ROWS", 7)
    np.testing.assert_array_equal(ranker_features(pairs, 100, np.float64), whole)
    features = features_module.PairFeatures(pairs, 100)
    blocks = [
        features.fill(start, np.empty((min(45, len(pairs) - start), len(FEATURE_NAMES))))
        for start in range(0, len(pairs), 45)
    ]
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
