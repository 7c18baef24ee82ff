"""Two-tower training end to end on a tiny generated world: quality, determinism, cold start."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.training.metrics import recall_at_k, top_k_indices
from pipelines.training.two_tower.train import train_two_tower
from tests.pipelines.training.two_tower.fast import FAST


def _recall_at_50(world, scores: np.ndarray) -> float:
    """Recall@50 over the catalog of the eval users, posts they engaged with before the window excluded."""
    items = {item: j for j, item in enumerate(world.catalog.column("item_id").to_pylist())}
    users = {user: u for u, user in enumerate(world.users_at_eval.column("user_id").to_pylist())}
    truth = np.zeros(scores.shape, bool)
    for row in world.examples.to_pylist():
        u, j = users.get(row["user_id"]), items.get(row["item_id"])
        if u is None or j is None:
            continue
        if row["split"] == "eval":
            truth[u, j] = True
        else:
            scores[u, j] = -np.inf
    keep = truth.any(axis=1)
    top = top_k_indices(scores[keep], 50)
    hits = np.take_along_axis(truth[keep], top, axis=1)
    return float(recall_at_k(hits, truth[keep].sum(axis=1), 50).mean())


def test_training_beats_most_popular(world, trained):
    users = trained.towers.embed_users(world.users_at_eval)
    model = _recall_at_50(world, users @ trained.towers.embed_items(world.catalog).T)
    train = world.examples.filter(pa.compute.equal(world.examples.column("split"), "train"))
    counts = pa.compute.value_counts(train.column("item_id")).to_pylist()
    popularity = dict((c["values"], c["counts"]) for c in counts)
    popular = np.array([popularity.get(i, 0) for i in world.catalog.column("item_id").to_pylist()], float)
    most_popular = _recall_at_50(world, np.tile(popular, (len(users), 1)))
    # the tiny world's users care about one or two topics; popularity ignores that
    assert model > 1.5 * most_popular
    assert trained.loss_history[-1] < trained.loss_history[0]
    assert len(trained.examples_per_second) == FAST.epochs and trained.throughput > 0


def test_same_data_and_seed_give_the_same_model(world, trained):
    again = train_two_tower(world.examples, world.catalog, FAST)
    np.testing.assert_allclose(again.loss_history, trained.loss_history, rtol=1e-5)
    np.testing.assert_allclose(
        again.towers.embed_items(world.catalog), trained.towers.embed_items(world.catalog), atol=1e-6
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
