"""A replayed night on the tiny world: every retriever's lists, with and without the list stages, keep the
rules of published lists (checked here independently) and are scored on what users did next."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.core.paths import ALS
from pipelines.core.run_date import end_of_day
from pipelines.core.settings import Settings
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.evaluation.night_models import NightModels
from pipelines.evaluation.recipes import Kitchen, Recipe
from pipelines.evaluation.replay import Replay, load_night
from pipelines.serving.model_store import ModelStore
from pipelines.serving.retrieval import make_retriever
from pipelines.serving.sharding import shard_of
from tests.pipelines.evaluation.conftest import DS

pytestmark = pytest.mark.slow

NIGHT = DS - dt.timedelta(days=1)
RECIPES = [
    Recipe("two_tower"),
    Recipe("two_tower", ranker="impressions", diversify=True),
    Recipe("most_popular", popularity_window_days=7),
    Recipe("most_popular", popularity_window_days=None, diversify=True, max_item_age_days=3.0),
    Recipe("item_knn", knn_neighbors=20),
    Recipe("item_knn", knn_neighbors=20, diversify=True),
    Recipe("als", als_factors=16),
    Recipe("als", als_factors=16, diversify=True),
    Recipe("als", als_factors=16, als_regularization=1.0),
]


@pytest.fixture(scope="module")
def replayed(tiny_world: Settings):
    settings = tiny_world
    store = ModelStore(None)
    with DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse:
        replay = Replay(load_night(warehouse, NIGHT, 2, settings), settings, store)
        kitchen = Kitchen(NightModels(warehouse, settings, store), {NIGHT: replay}, [NIGHT])
        systems = {recipe.name: kitchen.system(NIGHT, recipe) for recipe in RECIPES}
    return replay, systems


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_every_system_keeps_the_rules_of_published_lists(replayed, recipe: Recipe) -> None:
    replay, systems = replayed
    system = systems[recipe.name]
    assert system is not None and system.retriever == recipe.family
    lists = replay.lists(system).to_pandas()
    night = replay.night
    assert set(lists["user_id"]) == set(night.eval_users.to_pylist()), "every evaluated user gets a list"
    top_k = replay.settings.candidates.top_k
    seen = night.inputs["seen"].to_pandas()
    items = night.inputs["items"].to_pandas().set_index("item_id")
    assert lists.merge(seen, on=["user_id", "item_id"]).empty, "a seen post was listed"
    assert set(lists["item_id"]) <= set(items.index), "a post outside the catalog was listed"
    if recipe.max_item_age_days is not None:
        assert items.loc[lists["item_id"], "item_age_days"].max() <= recipe.max_item_age_days
    for user, rows in lists.groupby("user_id", sort=False):
        assert len(rows) <= top_k and rows["item_id"].is_unique, user
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1)), user
        assert (np.diff(rows["score"].to_numpy()) <= 0).all(), f"{user}: scores rise down the list"


def test_models_of_a_night_are_trained_on_the_days_before_it(replayed) -> None:
    _, systems = replayed
    served_day = (NIGHT - dt.timedelta(days=1)).isoformat()
    for system in systems.values():
        for version in (system.two_tower_version, system.ranker_version, system.als_version):
            assert version is None or version.startswith(f"{served_day}-"), version


def test_scores_are_those_of_the_lists_against_the_night_truth(replayed) -> None:
    replay, systems = replayed
    system = systems[RECIPES[2].name]  # most popular: deterministic and cheap to recount
    lists = replay.lists(system)
    scores = replay.score(lists)
    truth = replay.night.truth.to_pandas().groupby("user_id")["item_id"].apply(set)
    top = lists.filter(pc.less_equal(lists.column("rank"), 50)).to_pandas().groupby("user_id")["item_id"]
    top = top.apply(set)
    expected = [len(top.get(u, set()) & truth[u]) / len(truth[u]) for u in scores.user_ids]
    assert scores.per_user["recall_at_50"] == pytest.approx(expected)
    assert 0 < scores.means()["recall_at_50"] < 1


def test_als_retrieves_the_same_from_a_shards_own_histories_as_from_the_whole_log(replayed) -> None:
    # A nightly shard task reads only its users' part of the interactions input for ALS.
    replay, systems = replayed
    system = systems[RECIPES[6].name]
    night = replay.night
    interactions = night.inputs["interactions"]
    mine = pa.array(shard_of(interactions.column("user_id"), 2) == 0)
    users = night.users()
    users = users.filter(pa.array(shard_of(users.column("user_id"), 2) == 0))
    items = night.inputs["items"]
    vectors, as_of, config = replay.item_vectors(None), end_of_day(night.served_day), replay.settings.index
    whole, own = (
        make_retriever(system, replay.models, items, vectors, log, as_of, config)
        for log in (interactions, interactions.filter(mine))
    )
    expected = whole.search(whole.queries(users), 100)
    got = own.search(own.queries(users), 100)
    assert users.num_rows > 10 and (expected[0] >= 0).any()
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_a_ranker_learns_from_the_retrieved_posts_of_every_night_before(tiny_world: Settings) -> None:
    # Data without impressions trains the ranker on the earlier nights' retrieval, labelled by what users
    # did next. Those replays retrieve deeper than the ranker's own retrieval depth: ranks beyond it are
    # the ranker's "outside" rank, as when it scores served lists.
    settings = tiny_world.with_overrides({"ranker": {"retrieval_depth": 10}})
    nights = [NIGHT - dt.timedelta(days=4), NIGHT - dt.timedelta(days=2), NIGHT]
    store = ModelStore(None)
    recipe = Recipe("two_tower", ranker="retrieval")
    with DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse:
        replays = {n: Replay(load_night(warehouse, n, 2, settings), settings, store) for n in nights}
        kitchen = Kitchen(NightModels(warehouse, settings, store), replays, nights)
        retrieved = [replays[n].ranking_rows(kitchen.system(n, recipe.retrieval_only)) for n in nights[:2]]
        for rows, scores in retrieved:
            assert scores[:, 1].max() > 11, "the replay retrieves deeper than the ranker's depth"
            assert rows.column("label").to_numpy().sum() > 0
        assert kitchen.system(nights[0], recipe) is None, "the first night has no night before it"
        second = kitchen.system(nights[1], recipe)
        system = kitchen.system(NIGHT, recipe)
    assert second is not None and system is not None and system.ranker_version is not None
    assert system.ranker_version.startswith(f"{(NIGHT - dt.timedelta(days=1)).isoformat()}-")
    learned = {
        night: kitchen.models.trained[version].result.metrics
        for night, version in ((nights[1], second.ranker_version), (NIGHT, system.ranker_version))
    }
    # Every (night, user) group of the earlier nights' retrieval, with a positive label or without.
    groups = [len(set(rows.column("user_id").to_pylist())) for rows, _ in retrieved]
    parts = ("train_groups", "train_groups_without_positive", "eval_groups", "eval_groups_without_positive")
    assert [sum(int(m[p]) for p in parts) for m in learned.values()] == [groups[0], sum(groups)]
    lists = replays[NIGHT].lists(system)
    assert lists.num_rows > 0 and replays[NIGHT].score(lists).means()["recall_at_50"] > 0


def test_an_als_recipe_trains_with_its_own_regularisation(replayed) -> None:
    replay, systems = replayed
    plain, regularized = (systems[RECIPES[i].name] for i in (6, 8))
    assert RECIPES[8].name == "ALS f=16 reg=1" and RECIPES[6].name == "ALS f=16"
    assert plain.als_version != regularized.als_version
    models = [replay.models.get(ALS, s.als_version) for s in (plain, regularized)]
    assert [m.params.regularization for m in models] == [0.05, 1.0]
    assert [m.params.factors for m in models] == [16, 16]
    assert not np.allclose(models[0].item_factors, models[1].item_factors)
