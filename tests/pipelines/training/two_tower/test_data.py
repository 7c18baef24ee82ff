"""Two-tower training data: input checks on the examples and the catalog."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.training.two_tower.data import prepare_training_data
from tests.pipelines.training.two_tower.fast import FAST


def test_duplicate_catalog_ids_are_refused(world):
    doubled = pa.concat_tables([world.catalog, world.catalog.slice(3, 1)])
    with pytest.raises(ValueError, match="catalog item_id 'p0003' appears 2 times"):
        prepare_training_data(world.examples, doubled, FAST)
