"""Two-tower training end to end on a tiny generated world: quality, determinism, cold start, ablations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.training.two_tower.train import ablate_two_tower, train_two_tower
from tests.pipelines.training.retrieval_world import make_world
from tests.pipelines.training.two_tower.fast import EVAL, FAST


def test_training_beats_most_popular(trained):
    metrics = trained.metrics
    # the tiny world's users care about one or two topics; popularity ignores that
    assert metrics["two_tower"]["recall_at_50"] > 1.5 * metrics["most_popular"]["recall_at_50"]
    assert metrics["two_tower"]["ndcg_at_10"] > metrics["most_popular"]["ndcg_at_10"]
    assert trained.loss_history[-1] < trained.loss_history[0]
    assert len(trained.examples_per_second) == FAST.epochs and trained.throughput > 0


def test_same_data_and_seed_give_the_same_model(world, trained):
    again = train_two_tower(world.examples, world.catalog, FAST, EVAL, holdout=trained.holdout)
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


def test_ablation_trains_each_variant_on_one_holdout():
    tiny = make_world(n_users=60, n_items=80, events_per_user=12, seed=3)
    config = FAST.model_copy(update={"epochs": 1})
    results = ablate_two_tower(tiny.examples, tiny.catalog, config, EVAL, variants=("full", "with_logq"))
    assert set(results) == {"full", "with_logq", "most_popular", "item_knn"}
    # FAST has log-Q on, so "with_logq" is the very run of "full" (trained once)
    assert results["with_logq"] is results["full"]
    assert 0.0 <= results["full"]["recall_at_50"] <= 1.0
    with pytest.raises(ValueError, match="unknown ablation variants"):
        ablate_two_tower(tiny.examples, tiny.catalog, config, EVAL, variants=("no_towers",))
