"""The item index in the lake: the recall gate keeps a bad index unpublished, publish and load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.lake import ManifestError
from pipelines.core.paths import LakePaths
from pipelines.serving.index import build_scann_index
from pipelines.serving.index_store import build_and_publish_index, load_index
from pipelines.serving.recall import IndexRecallError
from tests.pipelines.serving.index_data import BAD_TREE, DS, EXACT, TREE, good_vectors, ids_for, table_of


def test_bad_config_raises_and_publishes_nothing(clustered_fixture, lake) -> None:
    ids, items, queries = clustered_fixture
    with pytest.raises(IndexRecallError, match=r"recall@100 = 0\.\d+ on 200 user queries") as caught:
        build_and_publish_index(lake, DS, table_of(ids, items), queries, BAD_TREE)
    assert caught.value.recall < 0.95 and caught.value.k == 100
    assert not lake.is_published(LakePaths.index(DS))
    assert lake.ls(LakePaths.index(DS)) == []
    with pytest.raises(ManifestError):
        load_index(lake, LakePaths.index(DS))


@pytest.mark.parametrize("config", [TREE, EXACT], ids=["tree_ah", "brute_force"])
def test_publish_and_load_give_identical_results(clustered_fixture, lake, config) -> None:
    ids, items, queries = clustered_fixture
    report = build_and_publish_index(lake, DS, table_of(ids, items), queries, config)
    assert report.n_items == 3000 and report.dim == 32 and report.recall >= 0.95
    manifest = lake.read_manifest(LakePaths.index(DS))
    assert manifest["metadata"]["n_items"] == 3000
    assert manifest["metadata"]["recall"] == report.recall
    assert sorted(manifest["files"]) == sorted(report.files)

    built = build_scann_index(ids, items, config)
    loaded = load_index(lake, LakePaths.index(DS))
    assert loaded.settings == built.settings and loaded.recall == report.recall
    want_ids, want_scores = built.search(queries, 100)
    got_ids, got_scores = loaded.search(queries, 100)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


def test_stage_needs_queries(lake) -> None:
    with pytest.raises(ValueError, match="needs user query embeddings"):
        build_and_publish_index(lake, DS, table_of(ids_for(4), good_vectors()), np.zeros((0, 3)), EXACT)
