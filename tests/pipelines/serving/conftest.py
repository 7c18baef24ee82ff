"""Serving test fixtures: the nightly chain run once per test module on a tiny world (world -> features ->
system selection -> inputs -> embeddings -> index -> shards -> publish), and the clustered catalog and
scratch lake of the item index tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipelines.core import jobs
from pipelines.core.context import settings_with
from pipelines.core.lake import Lake
from pipelines.core.settings import WorldConfig
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.world import World, load_world, world_config
from pipelines.jobs import run
from tests.pipelines.serving.index_data import clustered, ids_for
from tests.pipelines.serving.nightly_world import DS, SHARDS, TOP_K, run_nightly


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("nightly")
    env = {
        "NIGHTFEED_DATA_DIR": str(root),
        "NIGHTFEED_CANDIDATES__TOP_K": str(TOP_K),
        "NIGHTFEED_CANDIDATES__TOP_N": "100",
        "NIGHTFEED_CANDIDATES__NUM_SHARDS": str(SHARDS),
        "NIGHTFEED_TWO_TOWER__EPOCHS": "2",
        "NIGHTFEED_CANDIDATES__WAREHOUSE_TABLE": "nightly_candidates",
        # One candidate system, so the chain serves the two-tower with a ranker and diversification.
        "NIGHTFEED_SELECTION__RETRIEVERS": '["two_tower"]',
        "NIGHTFEED_SELECTION__TWO_TOWER_SEARCH": "{}",
        "NIGHTFEED_SELECTION__MMR_LAMBDAS": "[0.8]",
        "NIGHTFEED_SELECTION__RETRIEVAL_DEPTHS": "[500]",
        "NIGHTFEED_SELECTION__RANKERS": '["impressions"]',
        "NIGHTFEED_SELECTION__MAX_ITEM_AGE_CHOICES": "[null]",
        "NIGHTFEED_SELECTION__DIVERSIFY_CHOICES": "[true]",
        "NIGHTFEED_SELECTION__WINDOW_DAYS": "2",
        # The only prior weight tried is kept: the chain serves two-tower scores with a popularity prior.
        "NIGHTFEED_SELECTION__POPULARITY_PRIORS": "[1.0]",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = settings_with(None)
        with DuckDBWarehouse(settings.duckdb_file) as warehouse:
            generated = World(world_config("tiny", WorldConfig()), DS)
            load_world(warehouse, generated)
        for ds in generated.days():
            run(jobs.BUILD_FEATURES, ds)
        trained = run(jobs.TRAIN_SYSTEM, DS)
        published = run_nightly()
        yield {
            "lake": Lake(settings.lake_url),
            "settings": settings,
            "trained": trained,
            "published": published,
            "mp": mp,
        }


@pytest.fixture(scope="module")
def clustered_fixture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = clustered(3000, 32, 30, seed=5)
    return ids_for(3000), items, queries


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))
