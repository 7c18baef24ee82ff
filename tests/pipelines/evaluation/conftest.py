"""Evaluation test fixtures: a tiny world with its feature history, in a data folder of the test module."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from pipelines.core import jobs
from pipelines.core.context import settings_with
from pipelines.core.settings import Settings, WorldConfig
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.world import World, load_world, world_config
from pipelines.jobs import run
from tests.quick_selection import QUICK_SELECTION

DS = dt.date(2026, 11, 22)
# A small selection (tests/quick_selection.py) with fewer bootstrap resamples.
SMALL_SELECTION = {**QUICK_SELECTION, "NIGHTFEED_SELECTION__RESAMPLES": "200"}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a data folder holding the tiny world ending on ``DS`` and its features."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIGHTFEED_DATA_DIR", str(tmp_path_factory.mktemp("evaluation")))
        for name, value in SMALL_SELECTION.items():
            mp.setenv(name, value)
        settings = settings_with(None)
        world = World(world_config("tiny", WorldConfig()), DS)
        with DuckDBWarehouse(settings.duckdb_file) as warehouse:
            load_world(warehouse, world)
        for day in world.days():
            run(jobs.BUILD_FEATURES, day)
        yield settings
