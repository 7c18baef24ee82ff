"""The item index in the lake, and the index stage.

Writes ``index/ds=<ds>/``: the serialised ScaNN searcher under ``scann/``, the item ids in datapoint order
(``item_ids.parquet``) and ``index.json`` with the settings and the measured recall. The stage reads the
item embeddings of ``ds`` and a sample of real user queries; the manifest is written last and only when
recall@K reaches ``IndexConfig.min_recall``, so a degraded index is never published.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.model_settings import TWO_TOWER_RETRIEVER
from pipelines.core.paths import LakePaths
from pipelines.core.settings import IndexConfig, Settings
from pipelines.serving.embeddings import read_embeddings
from pipelines.serving.index import IndexSettings, ItemIndex, build_scann_index
from pipelines.serving.inputs import read_input
from pipelines.serving.prior import prior_offsets
from pipelines.serving.system import served_system
from pipelines.serving.vectors import embeddings_from_table

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCANN_DIR = "scann"
ITEM_IDS_FILE = "item_ids.parquet"
INFO_FILE = "index.json"


@dataclass
class IndexReport:
    """What the index stage built and published."""

    dataset: str
    uri: str
    n_items: int
    dim: int
    recall: float
    recall_k: int
    num_queries: int
    build_seconds: float
    settings: dict[str, Any]
    files: list[str] = field(default_factory=list)


def save_index(index: ItemIndex, lake: Lake, staging_rel: str) -> list[str]:
    """Write the index into the staging folder ``staging_rel`` (does not publish).

    Returns:
        The file names written, relative to ``staging_rel``, as :meth:`Lake.publish` wants them.
    """
    files: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nightfeed-scann-") as tmp:
        index.searcher.serialize(tmp, relative_path=True)
        for path in sorted(Path(tmp).iterdir()):
            rel = f"{SCANN_DIR}/{path.name}"
            lake.write_bytes(f"{staging_rel}/{rel}", path.read_bytes())
            files.append(rel)
    lake.write_parquet(f"{staging_rel}/{ITEM_IDS_FILE}", pa.table({"item_id": pa.array(index.item_ids)}))
    info = {"format_version": FORMAT_VERSION, "settings": asdict(index.settings), "recall": index.recall}
    lake.write_json(f"{staging_rel}/{INFO_FILE}", info)
    return [*files, ITEM_IDS_FILE, INFO_FILE]


def load_index(lake: Lake, dataset_rel: str) -> ItemIndex:
    """Load the published index of ``dataset_rel`` (e.g. ``LakePaths.index(ds)``) through its manifest.

    Raises:
        ManifestError: nothing published there, or the published files are incomplete or inconsistent.
        pipelines.core.lake.CorruptArtifactError: a file differs from its checksum (checked before ScaNN
            reads it; the message names the dataset's file).
    """
    from scann.scann_ops.py import scann_ops_pybind

    files = lake.verified_files(dataset_rel)
    by_name = {f.split("/run=", 1)[1].split("/", 1)[1]: f for f in files}
    missing = [name for name in (ITEM_IDS_FILE, INFO_FILE) if name not in by_name]
    scann_files = {name: rel for name, rel in by_name.items() if name.startswith(f"{SCANN_DIR}/")}
    if missing or not scann_files:
        raise ManifestError(f"{lake.uri(dataset_rel)} is not an item index: missing {missing or SCANN_DIR}")
    info = lake.read_json(by_name[INFO_FILE])
    if info.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{lake.uri(by_name[INFO_FILE])} has format_version {info.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    settings = IndexSettings(**info["settings"])
    item_ids = np.asarray(lake.read_parquet(by_name[ITEM_IDS_FILE]).column("item_id").to_pylist(), dtype=str)
    with tempfile.TemporaryDirectory(prefix="nightfeed-scann-") as tmp:
        for name, rel in scann_files.items():
            target = Path(tmp) / name.removeprefix(f"{SCANN_DIR}/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lake.read_bytes(rel))
        searcher = scann_ops_pybind.load_searcher(tmp)
    if searcher.size() != len(item_ids) or len(item_ids) != settings.n_items:
        raise ManifestError(
            f"{lake.uri(dataset_rel)}: searcher holds {searcher.size()} items, item_ids "
            f"{len(item_ids)}, index.json says {settings.n_items}"
        )
    return ItemIndex(searcher, item_ids, settings, recall=info.get("recall"))


def build_and_publish_index(
    lake: Lake,
    ds: dt.date,
    embeddings_table: pa.Table,
    queries: np.ndarray,
    config: IndexConfig,
    offsets: np.ndarray | None = None,
) -> IndexReport:
    """Index stage: build the item index of ``ds``, check its recall, publish it to ``index/ds=<ds>/``.

    Args:
        lake: where the index is published.
        ds: run date, ``YYYY-MM-DD``.
        embeddings_table: columns ``item_id`` (string) and ``embedding`` (list<float32>), one row per item.
        queries: ``(q, d)`` embeddings of real users, the sample the recall is measured on.
        config: index settings.
        offsets: the popularity prior's score offset of each row of ``embeddings_table`` (None: no prior).

    Returns:
        What was published, with the measured recall and build time.

    Raises:
        ValueError: malformed embeddings or queries (nothing is written).
        IndexRecallError: recall below ``config.min_recall`` (nothing is written or published).
        PublishConflict: another run published this ``ds`` meanwhile.
    """
    dataset = LakePaths.index(ds)
    item_ids, embeddings = embeddings_from_table(embeddings_table)
    if queries is None or len(queries) == 0:
        raise ValueError("the index stage needs user query embeddings to check recall; got none")
    started = time.perf_counter()
    index = build_scann_index(item_ids, embeddings, config, queries, offsets)
    build_seconds = time.perf_counter() - started
    staging = lake.begin_publish(dataset)
    files = save_index(index, lake, staging)
    recall_k = min(config.recall_k, index.n_items)
    num_queries = min(len(queries), config.recall_sample_queries)
    settings = asdict(index.settings)
    lake.publish(
        dataset,
        staging,
        files,
        metadata={
            "n_items": index.n_items,
            "dim": index.settings.dim,
            "recall": index.recall,
            "recall_k": recall_k,
            "recall_queries": num_queries,
            "settings": settings,
            "build_seconds": round(build_seconds, 3),
        },
        checksums=True,
    )
    log.info("published index of %d items, recall@%d %.4f", index.n_items, recall_k, index.recall)
    return IndexReport(
        dataset=dataset,
        uri=lake.uri(dataset),
        n_items=index.n_items,
        dim=index.settings.dim,
        recall=float(index.recall or 0.0),
        recall_k=recall_k,
        num_queries=num_queries,
        build_seconds=build_seconds,
        settings=settings,
        files=files,
    )


def index_items(lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Build, recall-check and publish the ScaNN index of ``ds``'s item embeddings.

    The recall is measured on real user queries: the user tower over a sample of ``ds``'s users. The
    item vectors carry the served system's popularity prior, from the ``items`` input of ``ds``.

    A served system that does not retrieve with the two-tower needs no index: nothing is published and
    the result says so.

    Raises:
        pipelines.serving.recall.IndexRecallError: recall below the configured floor (nothing is published).
        pipelines.serving.system.NoChampionError: no system is in force for ``ds``.
    """
    system = served_system(lake, ds, settings.use_current_system).system
    if system.retriever != TWO_TOWER_RETRIEVER:
        reason = f"the served system ({system.label}) retrieves without the item index"
        log.info("ds=%s: %s", ds, reason)
        return {"skipped": True, "reason": reason}
    from pipelines.training.two_tower import load_towers  # TensorFlow: only when a two-tower is served

    embeddings, version = read_embeddings(lake, ds)
    users = read_input(lake, ds, "users")
    rng = np.random.default_rng(settings.index.seed)
    sample = np.sort(rng.permutation(users.num_rows)[: settings.index.recall_sample_queries])
    towers = load_towers(lake, version)
    queries = towers.embed_users(users.take(pa.array(sample)))
    offsets = None
    if system.popularity_prior:
        items = read_input(lake, ds, "items")
        if items.column("item_id").to_pylist() != embeddings.column("item_id").to_pylist():
            raise RuntimeError(
                f"ds={ds}: the embeddings do not cover the same posts in the same order as inputs"
            )
        offsets = prior_offsets(items, system.popularity_prior, towers.config.temperature)
    report = build_and_publish_index(lake, ds, embeddings, queries, settings.index, offsets)
    return {
        "uri": report.uri,
        "n_items": report.n_items,
        "recall": report.recall,
        "recall_k": report.recall_k,
        "build_seconds": round(report.build_seconds, 2),
        "model_version": version,
    }
