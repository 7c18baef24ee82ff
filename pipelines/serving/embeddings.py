"""Item embeddings: the champion item tower batch-predicted over the eligible catalog of a run date, published
to ``embeddings/items/ds=…/`` with the model version that made them."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.settings import Settings
from pipelines.serving.inputs import read_input
from pipelines.serving.system import served_system

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.parquet"


def embed_items(lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Embed the eligible catalog of ``ds`` with the served system's item tower and publish the embeddings.

    A served system without a two-tower (an undiversified baseline) needs no embeddings: nothing is
    published and the result says so.

    Raises:
        pipelines.serving.system.NoChampionError: no system is in force for ``ds``.
    """
    system = served_system(lake, ds, settings.use_current_system).system
    version = system.two_tower_version
    if version is None:
        reason = f"the served system ({system.label}) uses no item embeddings"
        log.info("ds=%s: %s", ds, reason)
        return {"skipped": True, "reason": reason}
    from pipelines.training.two_tower import load_towers  # TensorFlow: only when a two-tower is served

    items = read_input(lake, ds, "items")
    started = time.perf_counter()
    towers = load_towers(lake, version)
    vectors = towers.embed_items(items).astype(np.float32)
    seconds = time.perf_counter() - started
    table = pa.table(
        {
            "item_id": items.column("item_id"),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        }
    )
    dataset = LakePaths.embeddings(ds)
    staging = lake.begin_publish(dataset)
    lake.write_parquet(f"{staging}/{EMBEDDINGS_FILE}", table)
    lake.publish(
        dataset,
        staging,
        [EMBEDDINGS_FILE],
        metadata={"model_version": version, "n_items": len(vectors), "dim": int(vectors.shape[1])},
    )
    log.info("embedded %d posts with two-tower %s in %.1fs", len(vectors), version, seconds)
    return {
        "model_version": version,
        "n_items": len(vectors),
        "items_per_s": round(len(vectors) / seconds, 1),
    }


def read_embeddings(lake: Lake, ds: dt.date) -> tuple[pa.Table, str]:
    """The published item embeddings of ``ds`` and the two-tower version that made them."""
    dataset = LakePaths.embeddings(ds)
    manifest = lake.read_manifest(dataset)
    return lake.read_parquet(lake.manifest_files(dataset)[0]), manifest["metadata"]["model_version"]
