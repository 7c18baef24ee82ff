"""Serving test fixtures: the clustered catalog and scratch lake of the item index tests."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.lake import Lake
from tests.pipelines.serving.index_data import clustered, ids_for


@pytest.fixture(scope="module")
def clustered_fixture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = clustered(3000, 32, 30, seed=5)
    return ids_for(3000), items, queries


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))
