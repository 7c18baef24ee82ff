"""Each synthetic regime makes the selection serve its expected winner, or a system within noise of it.

Small worlds of every regime (a few hundred users, three weeks) with a small grid: the served system's
family is the one whose signal dominates the regime, or its test-night Recall@50 is not significantly
below the best system of that family (the paired 95% interval of served - expected reaches 0). The
figures at full scale, and the targets, are in BENCHMARKS.md (``bench/bench_quality.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.core import jobs
from pipelines.core.context import settings_with
from pipelines.core.lake import Lake
from pipelines.core.model_settings import (
    ALS_RETRIEVER,
    KNN_RETRIEVER,
    POPULAR_RETRIEVER,
    TWO_TOWER_RETRIEVER,
)
from pipelines.core.settings import WorldConfig
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.data.features import NoEventsError
from pipelines.data.world import World, load_world, world_config
from pipelines.evaluation.selection import select_system, selection_facts
from pipelines.jobs import run
from tests.quick_selection import QUICK_SELECTION

pytestmark = pytest.mark.slow

DS = dt.date(2026, 11, 22)
# The families that can use the signal driving each regime: recent popularity; co-occurrence; topic match
# of posts nobody engaged with yet; age (a popularity window of a day, or a model that sees age);
# personal taste in a long ratings log.
EXPECTED = {
    "popularity": {POPULAR_RETRIEVER},
    "collaborative": {KNN_RETRIEVER, ALS_RETRIEVER},
    "content": {TWO_TOWER_RETRIEVER},
    "freshness": {POPULAR_RETRIEVER, TWO_TOWER_RETRIEVER},
    "ratings": {TWO_TOWER_RETRIEVER, ALS_RETRIEVER},
}
# The quick selection, with 3-day nights, two popularity windows and no list stages (ranker, age limit,
# diversification): the test is about the retriever families.
GRID = {
    **QUICK_SELECTION,
    "NIGHTFEED_SELECTION__WINDOW_DAYS": "3",
    "NIGHTFEED_SELECTION__RANKERS": '["none"]',
    "NIGHTFEED_SELECTION__DIVERSIFY_CHOICES": "[false]",
    "NIGHTFEED_SELECTION__MAX_ITEM_AGE_CHOICES": "[null]",
    "NIGHTFEED_SELECTION__POPULARITY_WINDOWS": "[1, 7]",
    "NIGHTFEED_SELECTION__RESAMPLES": "300",
}
# Sizes per regime: small, but with enough users on a 3-day test night to tell families apart.
SIZES: dict[str, dict[str, int]] = {
    "popularity": {"n_users": 300, "n_items": 300, "n_days": 14},
    "collaborative": {"n_users": 300, "n_items": 300, "n_days": 14},
    "content": {"n_users": 300, "n_items": 300, "n_days": 14},
    "freshness": {"n_users": 300, "n_items": 300, "n_days": 14},
    "ratings": {"n_users": 300, "n_items": 300, "n_days": 40},
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def regime_selection(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any]]]:
    regime = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIGHTFEED_DATA_DIR", str(tmp_path_factory.mktemp(regime)))
        for name, value in GRID.items():
            mp.setenv(name, value)
        settings = settings_with(None)
        base = WorldConfig(**SIZES[regime], impressions_per_active_user_day=10)
        world = World(world_config("tiny", base, regime), DS)
        with DuckDBWarehouse(settings.duckdb_file) as warehouse:
            load_world(warehouse, world)
        # The selection replays the last 4 windows of 3 days: features for those days and one before;
        # a ratings log has quiet days, which a history build builds from the days before them (as
        # `features --end` does).
        for day in world.days()[-13:]:
            try:
                run(jobs.BUILD_FEATURES, day)
            except NoEventsError:
                run(jobs.BUILD_FEATURES, day, quiet_day=True)
        with DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse:
            selection = select_system(warehouse, Lake(settings.lake_url), DS, settings, champion=None)
        yield regime, selection_facts(selection, seed=settings.selection.seed)


def test_each_regime_serves_its_expected_winner_or_one_within_noise(
    regime_selection: tuple[str, dict[str, Any]],
) -> None:
    regime, facts = regime_selection
    test = facts["test"]
    served = facts["decision"]["served"]
    expected = EXPECTED[regime]
    if test[served]["family"] in expected:
        return
    best = max(
        (name for name, row in test.items() if row["family"] in expected),
        key=lambda name: test[name]["summary"]["recall_at_50"],
    )
    gap = facts["differences_from_served"][best]["recall_at_50"]
    assert gap["high"] >= 0, (
        f"{regime}: served {test[served]['label']} is below {test[best]['label']} beyond noise: {gap}"
    )
