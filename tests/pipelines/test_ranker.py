"""Tests of the ranker stage: shared features, metrics, lambdarank training, save/load and feature checks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, LakePaths
from pipelines.core.settings import RankerConfig
from pipelines.training import ranker as ranker_module
from pipelines.training.ranker import (
    FEATURE_NAMES,
    FEATURES_FILE,
    FeatureMismatchError,
    RankingPairs,
    evaluate_ranker,
    load_ranker,
    ranker_features,
    save_ranker,
    train_ranker,
)
from pipelines.training.registry import current_champion, new_version, promote_if_blessed

COL = {name: j for j, name in enumerate(FEATURE_NAMES)}


# -- fixtures ------------------------------------------------------------------------------------------
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


TAGS = tuple(f"t{j}" for j in range(8))


def _synthetic_examples(seed: int = 3) -> tuple[pa.Table, np.ndarray, dict[str, int], dict[str, int]]:
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


def _stand_in(retrieval: np.ndarray, user_index: dict[str, int], item_index: dict[str, int]):
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


@pytest.fixture(scope="module")
def synthetic():
    rows, retrieval, user_index, item_index = _synthetic_examples()
    scorer = _stand_in(retrieval, user_index, item_index)
    return rows, scorer, train_ranker(rows, scorer, CONFIG)


# -- features ------------------------------------------------------------------------------------------
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
    rows, scorer, _ = synthetic
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    pairs = RankingPairs.from_examples(rows, score, rank)
    reference = ranker_features(pairs, CONFIG.retrieval_depth)
    monkeypatch.setattr(ranker_module, "_DENSE_TAG_TABLE_CELLS", dense_cells)
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


# -- training ------------------------------------------------------------------------------------------
def test_ranker_beats_retrieval_only_order(synthetic):
    _, _, result = synthetic
    m = result.metrics
    assert m["ndcg_at_10"] > m["retrieval_ndcg_at_10"] + 0.03, m
    assert m["map"] > m["retrieval_map"], m
    assert m["ndcg_at_10_lift"] == pytest.approx(m["ndcg_at_10"] - m["retrieval_ndcg_at_10"])
    # Ranker-only signals the stand-in retrieval score lacks carry weight.
    assert result.importance["ctr_short"] > 0 and result.importance["item_age_days"] > 0


def test_training_is_deterministic_and_array_input_matches_callable(synthetic):
    rows, scorer, result = synthetic
    score, rank = scorer(
        rows.column("user_id").to_numpy(zero_copy_only=False),
        rows.column("item_id").to_numpy(zero_copy_only=False),
    )
    again = train_ranker(rows, np.column_stack([score, rank]), CONFIG)
    assert again.ranker.booster.model_to_string() == result.ranker.booster.model_to_string()
    assert {k: v for k, v in again.metrics.items() if k != "fit_seconds"} == {
        k: v for k, v in result.metrics.items() if k != "fit_seconds"
    }


def test_groups_without_positive_are_dropped_and_counted():
    # train: (d1, u1) labels 1, 0 | (d1, u2) 0, 0 (dropped) | (d2, u1) 0, 2
    # eval:  (d3, u1) 1, 0, 0 | (d3, u2) 0, 0 (dropped)
    rows, _, _, _ = _synthetic_examples()
    pick = rows.slice(0, 11)
    d1, d2, d3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
    pick = pick.set_column(
        0, "user_id", pa.array(["u1", "u1", "u2", "u2", "u1", "u1", "u1", "u1", "u1", "u2", "u2"])
    )
    pick = pick.set_column(2, "ds", pa.array([d1, d1, d1, d1, d2, d2, d3, d3, d3, d3, d3], pa.date32()))
    pick = pick.set_column(4, "label", pa.array([1, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0], pa.int32()))
    pick = pick.set_column(5, "split", pa.array(["train"] * 6 + ["eval"] * 5))
    retrieval = np.column_stack([np.linspace(1, 0, 11), np.arange(1, 12)])
    result = train_ranker(pick, retrieval, CONFIG.model_copy(update={"min_data_in_leaf": 1}))
    m = result.metrics
    assert (m["train_rows"], m["train_groups"], m["train_groups_without_positive"]) == (4, 2, 1)
    assert (m["eval_rows"], m["eval_groups"], m["eval_groups_without_positive"]) == (3, 1, 1)
    # One eval group, relevant row (score 1 - 6/10 = 0.4) first in retrieval order.
    assert m["retrieval_ndcg_at_10"] == pytest.approx(1.0)


def test_bad_label_and_bad_rank_name_the_row(synthetic):
    rows, scorer, _ = synthetic
    labels = rows.column("label").to_numpy().copy()
    labels[7] = 9
    bad = rows.set_column(rows.schema.get_field_index("label"), "label", pa.array(labels, pa.int32()))
    with pytest.raises(ValueError, match=r"ranking example row 7: label must be 0..4, got 9"):
        train_ranker(bad, scorer, CONFIG)
    # Rank 52 is beyond depth 50 + 1; the message names the first row that training would use.
    retrieval = np.column_stack([np.zeros(rows.num_rows), np.full(rows.num_rows, CONFIG.retrieval_depth + 2)])
    with pytest.raises(ValueError, match=r"retrieval rank given for ranking example row \d+ is 52.0"):
        train_ranker(rows, retrieval, CONFIG)
    with pytest.raises(ValueError, match=r"must be \(n_rows, 2\)"):
        train_ranker(rows, np.zeros((3, 2)), CONFIG)


# -- model I/O and feature checks ----------------------------------------------------------------------
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


def test_champion_evaluated_on_the_same_holdout_gets_the_training_metrics(synthetic, tmp_path):
    rows, scorer, result = synthetic
    again = evaluate_ranker(result.ranker, rows, scorer, CONFIG)
    assert again == {k: result.metrics[k] for k in again}
    assert {"ndcg_at_10", "retrieval_ndcg_at_10", "eval_groups"} <= set(again)


def test_exported_ranker_passes_the_registry_gate(synthetic, tmp_path):
    _, _, result = synthetic
    lake = Lake(str(tmp_path / "lake"))
    version = new_version(dt.date(2026, 11, 22), CONFIG.model_dump())
    save_ranker(result, lake, version)
    decision = promote_if_blessed(lake, RANKER, version, result.metrics, None, CONFIG.blessing)
    assert decision.promoted, decision.reason
    assert decision.metric == "ndcg_at_10" and decision.value == result.metrics["ndcg_at_10"]
    assert current_champion(lake, RANKER)["version"] == version


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


def test_loading_a_model_whose_stored_feature_list_differs_fails(synthetic, tmp_path):
    _, _, result = synthetic
    lake = Lake(str(tmp_path / "lake"))
    version = new_version(dt.date(2026, 11, 22), CONFIG.model_dump())
    save_ranker(result, lake, version)
    lake.write_json(f"{LakePaths.model_dir(RANKER, version)}/{FEATURES_FILE}", list(FEATURE_NAMES[1:]))
    with pytest.raises(
        FeatureMismatchError, match=r"LightGBM model file has 15; unexpected \['retrieval_score'\]"
    ):
        load_ranker(lake, version)


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
