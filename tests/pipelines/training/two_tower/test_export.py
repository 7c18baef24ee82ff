"""Two-tower export, reload and promotion through the lake."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipelines.core.lake import Lake
from pipelines.core.settings import BlessingConfig
from pipelines.training import registry
from pipelines.training.two_tower.export import export_two_tower, load_towers
from pipelines.training.two_tower.train import evaluate_version
from tests.pipelines.training.two_tower.fast import EVAL, FAST


def test_export_reload_and_promote(tmp_path, world, trained):
    lake = Lake(str(tmp_path / "lake"))
    version = registry.new_version(dt.date(2026, 11, 14), FAST.model_dump())
    uri = export_two_tower(trained, lake, version)
    assert uri.endswith(version)
    towers = load_towers(lake, version)
    np.testing.assert_allclose(
        towers.embed_items(world.catalog), trained.towers.embed_items(world.catalog), atol=1e-6
    )
    np.testing.assert_allclose(
        towers.embed_users(world.users_at_eval), trained.towers.embed_users(world.users_at_eval), atol=1e-6
    )
    saved = lake.read_json(f"models/two_tower/{version}/metrics.json")
    assert saved["metrics"]["two_tower"] == trained.metrics["two_tower"]
    with pytest.raises(FileExistsError):
        export_two_tower(trained, lake, version)

    gate = BlessingConfig()
    first = registry.promote_if_blessed(lake, "two_tower", version, trained.metrics["two_tower"], None, gate)
    assert first.promoted
    # the next run re-evaluates the champion on its own hold-out; here the same model scores the same
    champion = registry.current_champion(lake, "two_tower")
    champion_metrics = evaluate_version(lake, champion["version"], trained.holdout, EVAL)
    assert champion_metrics["recall_at_50"] == pytest.approx(trained.metrics["two_tower"]["recall_at_50"])
    second_version = registry.new_version(dt.date(2026, 11, 14), FAST.model_dump())
    export_two_tower(trained, lake, second_version)
    second = registry.promote_if_blessed(
        lake, "two_tower", second_version, trained.metrics["two_tower"], champion_metrics, gate, version
    )
    assert second.promoted and registry.current_champion(lake, "two_tower")["version"] == second_version


def test_load_of_an_unfinished_export_fails(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match=r"config\.json missing"):
        load_towers(lake, "2026-11-14-20261114T000000000000Z-00000000")
