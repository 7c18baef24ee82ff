"""Two-tower export, reload and promotion through the lake."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipelines.core.lake import Lake
from pipelines.training import registry
from pipelines.training.two_tower.export import export_two_tower, load_towers
from tests.pipelines.training.two_tower.fast import FAST


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
    assert saved["loss_history"] == trained.loss_history and saved["version"] == version
    with pytest.raises(FileExistsError):
        export_two_tower(trained, lake, version)


def test_load_of_an_unfinished_export_fails(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match=r"config\.json missing"):
        load_towers(lake, "2026-11-14-20261114T000000000000Z-00000000")
