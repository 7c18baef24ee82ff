"""Two-tower model: loss pieces by hand, input checks, and one short training on a tiny generated world."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.lake import Lake
from pipelines.core.settings import BlessingConfig, EvaluationConfig, TwoTowerConfig
from pipelines.training import registry, two_tower
from tests.pipelines.retrieval_world import make_world

tf = two_tower.tf

FAST = TwoTowerConfig(batch_size=128, epochs=4, mixed_negatives=64, logq_correction=True)
EVAL = EvaluationConfig()


def _loss(config: TwoTowerConfig, queries, candidates, probability=None, ids=None) -> float:
    task = two_tower.make_retrieval_task(config)
    return float(
        task(
            tf.constant(queries, tf.float32),
            tf.constant(candidates, tf.float32),
            candidate_sampling_probability=None
            if probability is None
            else tf.constant(probability, tf.float32),
            candidate_ids=None if ids is None else tf.constant(ids),
            compute_metrics=False,
        )
    )


# -- loss pieces --------------------------------------------------------------------------------
def test_logq_shifts_each_candidate_logit_by_minus_log_q():
    queries = [[1.0, 0.0], [0.0, 1.0]]
    candidates = [[1.0, 0.0], [0.6, 0.8]]
    # logits = q c^T = [[1, 0.6], [0, 0.8]]; positives on the diagonal
    config = FAST.model_copy(update={"remove_accidental_hits": False})
    # without correction: row 0 log(e^1 + e^0.6) - 1 = 0.5130; row 1 log(e^0 + e^0.8) - 0.8 = 0.3711
    assert _loss(config, queries, candidates) == pytest.approx((0.51302 + 0.37110) / 2, abs=1e-4)
    # q = [0.5, 0.1]: subtract log q = [-0.6931, -2.3026] -> [[1.6931, 2.9026], [0.6931, 3.1026]]
    # row 0: log(e^1.6931 + e^2.9026) - 1.6931 = 1.4705; row 1: log(e^0.6931 + e^3.1026) - 3.1026 = 0.0862
    corrected = _loss(config, queries, candidates, probability=[0.5, 0.1])
    assert corrected == pytest.approx((1.47049 + 0.08623) / 2, abs=1e-4)
    logits = np.array([[1.0, 0.6], [0.0, 0.8]]) - np.log([0.5, 0.1])
    by_numpy = np.mean([np.logaddexp.reduce(logits[i]) - logits[i, i] for i in range(2)])
    assert corrected == pytest.approx(by_numpy, abs=1e-5)


def test_accidental_hits_are_masked():
    # q = identity, so the logits are c^T: [[2, 1, 0], [0, 1, 0], [0, 0, 1]]; ids [7, 7, 9]
    queries = np.eye(3)
    candidates = [[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    config = FAST.model_copy(update={"remove_accidental_hits": True})
    # row 0 (post 7): column 1 is post 7 too -> masked: log(e^2 + e^0) - 2 = 0.1269
    # row 1 (post 7): column 0 masked: log(e^1 + e^0) - 1 = 0.3133
    # row 2 (post 9): nothing masked: log(e^0 + e^0 + e^1) - 1 = 0.5514
    assert _loss(config, queries, candidates, ids=[7, 7, 9]) == pytest.approx(
        (0.12693 + 0.31326 + 0.55144) / 3, abs=1e-4
    )
    # switched off, row 0 also counts column 1: log(e^2 + e^1 + e^0) - 2 = 0.4076
    off = FAST.model_copy(update={"remove_accidental_hits": False})
    assert _loss(off, queries, candidates, ids=[7, 7, 9]) == pytest.approx(
        (0.40761 + 0.55144 + 0.55144) / 3, abs=1e-4
    )


def test_hard_negatives_keep_the_highest_scoring_negatives():
    # one query, logits [1, 3, 2, -1] with the positive first
    queries, candidates = [[1.0]], [[1.0], [3.0], [2.0], [-1.0]]
    # all negatives: log(e^1 + e^3 + e^2 + e^-1) - 1 = 2.4197
    assert _loss(
        FAST.model_copy(update={"remove_accidental_hits": False}), queries, candidates
    ) == pytest.approx(2.41972, abs=1e-4)
    # hardest one only (3): log(e^1 + e^3) - 1 = 2.1269
    hard = FAST.model_copy(update={"remove_accidental_hits": False, "hard_negatives": 1})
    assert _loss(hard, queries, candidates) == pytest.approx(2.12693, abs=1e-4)


def test_mixed_negative_sampling_probability():
    # B = 4 in-batch, M = 2 uniform from N = 8: q = (4 p + 2/8) / 6
    # p = 0.5 -> (2 + 0.25) / 6 = 0.375; p = 0.25 -> (1 + 0.25) / 6 = 0.20833; p = 0 -> 0.25 / 6 = 0.041667
    q = two_tower.candidate_sampling_probability(np.array([0.5, 0.25, 0.0]), 4, 2, 8)
    np.testing.assert_allclose(q, [0.375, 0.208333, 0.041667], rtol=1e-5)
    # no uniform candidates: the in-batch share itself
    np.testing.assert_allclose(two_tower.candidate_sampling_probability(np.array([0.5]), 4, 0, 8), [0.5])


def test_swap_for_oov_only_touches_known_ids():
    ids = tf.constant([[0, 1, 5, 9]], tf.int64)  # 0 = padding, 1..4 = OOV buckets, 5.. = known
    rng = tf.random.Generator.from_seed(1)
    # rate 1: 5 -> 1 + 5 % 4 = 2, 9 -> 1 + 9 % 4 = 2; padding and OOV stay
    assert two_tower._swap_for_oov(ids, 1.0, 4, rng).numpy().tolist() == [[0, 1, 2, 2]]
    assert two_tower._swap_for_oov(ids, 0.0, 4, rng).numpy().tolist() == [[0, 1, 5, 9]]


# -- inputs ------------------------------------------------------------------------------------------------
def test_cap_keeps_the_most_recent_examples_per_user():
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u1", "u1"],
            "event_ts": pa.array([t0, t0, t0 + dt.timedelta(hours=2), t0 + dt.timedelta(hours=1)]),
            "item_id": ["a", "b", "c", "d"],
        }
    )
    kept = two_tower.cap_examples_per_user(table, 2)
    # u1's latest two are c (+2h) and d (+1h); u2 has one
    assert kept.column("item_id").to_pylist() == ["c", "d", "b"]


def test_capped_examples_do_not_depend_on_the_order_the_warehouse_returned():
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    # u1 engaged with three posts in the same second: the tie breaks by post id.
    table = pa.table(
        {
            "user_id": ["u1", "u1", "u2", "u1"],
            "event_ts": pa.array([t0, t0, t0, t0]),
            "item_id": ["z", "a", "b", "m"],
        }
    )
    kept = two_tower.cap_examples_per_user(table, 2)
    assert kept.column("item_id").to_pylist() == ["a", "m", "b"]
    for order in ([3, 2, 1, 0], [1, 3, 0, 2]):
        assert two_tower.cap_examples_per_user(table.take(order), 2).equals(kept)


def test_user_features_pad_lists_and_name_bad_rows():
    users = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "history": pa.array([["a", "b", "c"], [], None], pa.list_(pa.string())),
            "selected_tags": pa.array([[], [], []]),  # list<null>, as built from Python
            "account_age_days": [1.0, 2.0, 3.0],
            "activity_lookback": [0, 1, 2],
        }
    )
    config = FAST.model_copy(update={"history_length": 2})
    features = two_tower.user_features(users, config)
    assert features["history"].tolist() == [["a", "b"], ["", ""], ["", ""]]
    assert features["selected_tags"].shape == (3, config.max_tags)
    with pytest.raises(ValueError, match="users row 1: user_id is null"):
        two_tower.user_features(users.set_column(0, "user_id", pa.array(["u1", None, "u3"])), config)
    with pytest.raises(ValueError, match="users row 2: account_age_days is not finite"):
        two_tower.user_features(
            users.set_column(3, "account_age_days", pa.array([1.0, 2.0, math.inf])), config
        )
    with pytest.raises(ValueError, match=r"lacks columns \['activity_lookback'\]"):
        two_tower.user_features(users.drop_columns(["activity_lookback"]), config)


def test_duplicate_catalog_ids_are_refused(world):
    doubled = pa.concat_tables([world.catalog, world.catalog.slice(3, 1)])
    with pytest.raises(ValueError, match="catalog item_id 'p0003' appears 2 times"):
        two_tower.prepare_training_data(world.examples, doubled, FAST)


# -- model -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def small_data(world):
    return two_tower.prepare_training_data(world.examples, world.catalog, FAST)


def _first_batch(data, config):
    return next(iter(two_tower.training_dataset(data, config)))


def test_candidate_set_appends_uniform_negatives_with_mixture_probability(small_data):
    model = two_tower.TwoTowerModel(small_data, FAST)
    batch = _first_batch(small_data, FAST)
    queries, candidates, keys, probability = model.candidate_set(batch, training=True)
    b, m, n = FAST.batch_size, FAST.mixed_negatives, len(small_data.candidate_ids)
    assert queries.shape == (b, FAST.embedding_dim) and candidates.shape == (b + m, FAST.embedding_dim)
    assert keys[:b].numpy().tolist() == batch["candidate_key"].numpy().tolist()
    assert int(tf.reduce_min(keys[b:])) >= 0 and int(tf.reduce_max(keys[b:])) < n
    p = small_data.candidate_probability[keys.numpy()]
    np.testing.assert_allclose(probability.numpy(), (b * p + m / n) / (b + m), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(candidates.numpy(), axis=1), 1.0, rtol=1e-5)


def test_compute_loss_is_the_corrected_softmax_of_the_embeddings(small_data):
    config = FAST.model_copy(update={"mixed_negatives": 0, "temperature": 0.5})
    model = two_tower.TwoTowerModel(small_data, config)
    batch = _first_batch(small_data, config)
    queries, candidates, keys, probability = model.candidate_set(batch)
    logits = queries.numpy() @ candidates.numpy().T / 0.5 - np.log(probability.numpy())
    keys = keys.numpy()
    rows = []
    for i in range(len(keys)):
        keep = (keys != keys[i]) | (np.arange(len(keys)) == i)  # accidental hits removed
        rows.append(np.logaddexp.reduce(logits[i, keep]) - logits[i, i])
    assert float(model.compute_loss(batch)) == pytest.approx(np.mean(rows), rel=1e-4)
    no_logq = two_tower.TwoTowerModel(small_data, config.model_copy(update={"logq_correction": False}))
    assert no_logq.candidate_set(batch)[3] is None


def test_temperature_is_trained_only_when_learnable(small_data):
    fixed = two_tower.TwoTowerModel(small_data, FAST)
    learnable = two_tower.TwoTowerModel(small_data, FAST.model_copy(update={"learnable_temperature": True}))
    batch = _first_batch(small_data, FAST)
    for model in (fixed, learnable):
        model.compute_loss(batch)  # builds the layers
    assert not any(v is fixed.log_temperature for v in fixed.trainable_variables)
    assert any(v is learnable.log_temperature for v in learnable.trainable_variables)
    with tf.GradientTape() as tape:
        loss = learnable.compute_loss(batch)
    assert float(tape.gradient(loss, learnable.log_temperature)) != 0.0


# -- training end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(world):
    return two_tower.train_two_tower(world.examples, world.catalog, FAST, EVAL)


def test_training_beats_most_popular(trained):
    metrics = trained.metrics
    # the tiny world's users care about one or two topics; popularity ignores that
    assert metrics["two_tower"]["recall_at_50"] > 1.5 * metrics["most_popular"]["recall_at_50"]
    assert metrics["two_tower"]["ndcg_at_10"] > metrics["most_popular"]["ndcg_at_10"]
    assert trained.loss_history[-1] < trained.loss_history[0]
    assert len(trained.examples_per_second) == FAST.epochs and trained.throughput > 0


def test_same_data_and_seed_give_the_same_model(world, trained):
    again = two_tower.train_two_tower(world.examples, world.catalog, FAST, EVAL, holdout=trained.holdout)
    np.testing.assert_allclose(again.loss_history, trained.loss_history, rtol=1e-5)
    assert again.metrics["two_tower"]["recall_at_50"] == pytest.approx(
        trained.metrics["two_tower"]["recall_at_50"], abs=1e-6
    )


def test_cold_start_user_ranks_selected_tag_higher(world, trained):
    items = trained.towers.embed_items(world.catalog)
    item_tags = world.catalog.column("tags").to_pylist()
    for tags in world.topic_tags:
        tag = tags[0]
        user = pa.Table.from_pylist(
            [
                {
                    "user_id": "never-seen",
                    "history": [],
                    "selected_tags": [tag],
                    "account_age_days": 0.5,
                    "activity_lookback": 0,
                }
            ]
        )
        embedding = trained.towers.embed_users(user)[0]
        assert np.isfinite(embedding).all()
        scores = items @ embedding
        tagged = np.array([tag in t for t in item_tags])
        assert scores[tagged].mean() > scores[~tagged].mean(), tag


def test_unseen_post_embeds_from_its_content(world, trained):
    items = trained.towers.embed_items(world.catalog)
    original = world.catalog.slice(0, 1).to_pylist()[0]
    copy = pa.Table.from_pylist([{**original, "item_id": "never-seen-post"}], schema=world.catalog.schema)
    embedding = trained.towers.embed_items(copy)[0]
    assert np.isfinite(embedding).all()
    similarity = items @ embedding
    topic = world.item_topic[[int(i[1:]) for i in world.catalog.column("item_id").to_pylist()]]
    other_topics = topic != topic[0]
    # the id is new, so only content can place it next to the post it copies and away from other topics
    assert similarity[0] > similarity[other_topics].mean() + 0.05


def test_export_reload_and_promote(tmp_path, world, trained):
    lake = Lake(str(tmp_path / "lake"))
    version = registry.new_version(dt.date(2026, 11, 14), FAST.model_dump())
    uri = two_tower.export_two_tower(trained, lake, version)
    assert uri.endswith(version)
    towers = two_tower.load_towers(lake, version)
    np.testing.assert_allclose(
        towers.embed_items(world.catalog), trained.towers.embed_items(world.catalog), atol=1e-6
    )
    np.testing.assert_allclose(
        towers.embed_users(world.users_at_eval), trained.towers.embed_users(world.users_at_eval), atol=1e-6
    )
    saved = lake.read_json(f"models/two_tower/{version}/metrics.json")
    assert saved["metrics"]["two_tower"] == trained.metrics["two_tower"]
    with pytest.raises(FileExistsError):
        two_tower.export_two_tower(trained, lake, version)

    gate = BlessingConfig()
    first = registry.promote_if_blessed(lake, "two_tower", version, trained.metrics["two_tower"], None, gate)
    assert first.promoted
    # the next run re-evaluates the champion on its own hold-out; here the same model scores the same
    champion = registry.current_champion(lake, "two_tower")
    champion_metrics = two_tower.evaluate_version(lake, champion["version"], trained.holdout, EVAL)
    assert champion_metrics["recall_at_50"] == pytest.approx(trained.metrics["two_tower"]["recall_at_50"])
    second_version = registry.new_version(dt.date(2026, 11, 14), FAST.model_dump())
    two_tower.export_two_tower(trained, lake, second_version)
    second = registry.promote_if_blessed(
        lake, "two_tower", second_version, trained.metrics["two_tower"], champion_metrics, gate, version
    )
    assert second.promoted and registry.current_champion(lake, "two_tower")["version"] == second_version


def test_load_of_an_unfinished_export_fails(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match=r"config\.json missing"):
        two_tower.load_towers(lake, "2026-11-14-20261114T000000000000Z-00000000")


def test_ablation_trains_each_variant_on_one_holdout():
    tiny = make_world(n_users=60, n_items=80, events_per_user=12, seed=3)
    config = FAST.model_copy(update={"epochs": 1})
    results = two_tower.ablate_two_tower(
        tiny.examples, tiny.catalog, config, EVAL, variants=("full", "with_logq")
    )
    assert set(results) == {"full", "with_logq", "most_popular", "item_knn"}
    # FAST has log-Q on, so "with_logq" is the very run of "full" (trained once)
    assert results["with_logq"] is results["full"]
    assert 0.0 <= results["full"]["recall_at_50"] <= 1.0
    with pytest.raises(ValueError, match="unknown ablation variants"):
        two_tower.ablate_two_tower(tiny.examples, tiny.catalog, config, EVAL, variants=("no_towers",))
