"""Corrupt artifacts: every model and index file is checked against the checksum recorded when it was
written, before a native loader (LightGBM, ScaNN, numpy) reads it; a mismatch is a permanent error that
names the file, and a pointer that is not JSON is named too."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from pipelines.core.errors import PermanentError
from pipelines.core.lake import CorruptArtifactError, Lake, ManifestError
from pipelines.core.paths import ALS, RANKER, SYSTEM, LakePaths
from pipelines.serving.index_store import build_and_publish_index, load_index
from pipelines.serving.system import ServedSystem, served_system
from pipelines.training import registry
from pipelines.training.als import AlsParams, load_als, save_als, train_als
from pipelines.training.ranker.export import load_ranker, save_ranker
from pipelines.training.ranker.train import train_ranker
from tests.pipelines.serving.index_data import EXACT, clustered, ids_for, table_of
from tests.pipelines.training.ranker.synthetic_ranking import CONFIG, stand_in_scorer, synthetic_examples

DS = dt.date(2026, 11, 22)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def _truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def test_case_09_a_truncated_ranker_is_named_before_lightgbm_reads_it(lake: Lake) -> None:
    rows, retrieval, users, items = synthetic_examples()
    result = train_ranker(rows, stand_in_scorer(retrieval, users, items), CONFIG)
    version = registry.new_version(DS, {})
    save_ranker(result, lake, version)
    assert load_ranker(lake, version).booster.num_trees() == result.ranker.booster.num_trees()
    model = lake.path(f"{LakePaths.model_dir(RANKER, version)}/model.txt")
    _truncate(model)
    with pytest.raises(
        CorruptArtifactError, match=rf"{re.escape(model)} is corrupt: its checksum is sha256:"
    ):
        load_ranker(lake, version)
    assert issubclass(CorruptArtifactError, PermanentError)


def test_case_09_a_changed_or_missing_model_file_is_named(lake: Lake) -> None:
    counts = sp.random(30, 20, density=0.3, format="csr", random_state=1, dtype=np.float32)
    model = train_als(counts, pa.array([f"p{i}" for i in range(20)]), AlsParams(factors=4, iterations=2))
    version = registry.new_version(DS, {})
    save_als(model, lake, version)
    np.testing.assert_array_equal(load_als(lake, version).item_factors, model.item_factors)
    folder = LakePaths.model_dir(ALS, version)
    ids = lake.path(f"{folder}/item_ids.json")
    Path(ids).write_text(Path(ids).read_text().replace("p1", "p9"))
    with pytest.raises(CorruptArtifactError, match=rf"{re.escape(ids)} is corrupt"):
        load_als(lake, version)
    Path(ids).unlink()
    with pytest.raises(CorruptArtifactError, match=rf"{re.escape(ids)} is missing"):
        load_als(lake, version)
    config = lake.path(f"{folder}/config.json")
    Path(config).write_text("{")
    with pytest.raises(CorruptArtifactError, match=rf"{re.escape(config)} is not valid JSON"):
        load_als(lake, version)
    with pytest.raises(registry.MissingExportError, match=r"config\.json missing"):
        load_als(lake, registry.new_version(DS, {}))


def test_case_09_a_corrupt_index_file_is_named_before_scann_reads_it(lake: Lake) -> None:
    vectors, queries = clustered(300, 8, 5, seed=2)
    dataset = LakePaths.index(DS)
    build_and_publish_index(lake, DS, table_of(ids_for(300), vectors), queries, EXACT)
    assert load_index(lake, dataset).n_items == 300
    manifest = lake.read_manifest(dataset)
    assert set(manifest["checksums"]) == set(manifest["files"])
    scann_file = next(f for f in lake.manifest_files(dataset) if "/scann/" in f and f.endswith(".npy"))
    _truncate(lake.path(scann_file))
    with pytest.raises(CorruptArtifactError, match=rf"{re.escape(lake.path(scann_file))} is corrupt"):
        load_index(lake, dataset)


def test_case_09_an_index_published_without_checksums_is_refused(lake: Lake) -> None:
    staging = lake.begin_publish("index/ds=2026-11-22")
    lake.write_json(f"{staging}/index.json", {})
    lake.publish("index/ds=2026-11-22", staging, ["index.json"])
    with pytest.raises(ManifestError, match="published without checksums"):
        load_index(lake, "index/ds=2026-11-22")


def test_case_09_a_truncated_champion_pointer_is_named(lake: Lake) -> None:
    system = ServedSystem("most_popular", None, diversify=False)
    registry.promote(
        lake, SYSTEM, {"version": registry.new_version(DS, {}), "system": system.to_json()}, None
    )
    assert served_system(lake) == system
    pointer = lake.path(LakePaths.champion(SYSTEM))
    _truncate(pointer)
    with pytest.raises(CorruptArtifactError, match=rf"{re.escape(pointer)} is not valid JSON"):
        served_system(lake)
