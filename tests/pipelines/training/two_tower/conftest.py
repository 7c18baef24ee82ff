"""The tiny retrieval world and a model trained on it with the fast config, once per test module."""

from __future__ import annotations

import pytest

from pipelines.training.two_tower.train import train_two_tower
from tests.pipelines.training.retrieval_world import make_world
from tests.pipelines.training.two_tower.fast import FAST


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def trained(world):
    return train_two_tower(world.examples, world.catalog, FAST)
