"""The item index in the lake, and the index stage.

Writes ``index/ds=<ds>/``: the serialised ScaNN searcher under ``scann/``, the item ids in datapoint order
(``item_ids.parquet``) and ``index.json`` with the settings and the measured recall. The stage reads the
item embeddings of ``ds`` and a sample of real user queries; the manifest is written last and only when
recall@K reaches ``IndexConfig.min_recall``, so a degraded index is never published.

A served system that retrieves with ALS over a large catalog also gets a tree over the ALS post factors,
built and checked once for every shard, in ``als/`` (the same three files, ``index.json`` naming the ALS
model); where the catalog is small or the tree fails its recall check, no ``als/`` is written and the
shards search the factors exactly.
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
from pipelines.core.model_settings import ALS_RETRIEVER, TWO_TOWER_RETRIEVER
from pipelines.core.paths import ALS, LakePaths
from pipelines.core.settings import IndexConfig, Settings
from pipelines.serving.embeddings import read_embeddings
from pipelines.serving.index import IndexSettings, ItemIndex, build_scann_index, tree_threshold
from pipelines.serving.inputs import read_input, read_shard_input
from pipelines.serving.prior import prior_offsets
from pipelines.serving.system import ServedSystem, served_system
from pipelines.serving.vectors import embeddings_from_table

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCANN_DIR = "scann"
ITEM_IDS_FILE = "item_ids.parquet"
INFO_FILE = "index.json"
ALS_PART = "als"


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


def save_index(
    index: ItemIndex, lake: Lake, staging_rel: str, part: str = "", **info_fields: Any
) -> list[str]:
    """Write the index into the staging folder ``staging_rel`` (does not publish), into its subfolder
    ``part`` when given; ``info_fields`` are also written to its ``index.json``.

    Returns:
        The file names written, relative to ``staging_rel``, as :meth:`Lake.publish` wants them.
    """
    prefix = f"{part}/" if part else ""
    files: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nightfeed-scann-") as tmp:
        index.searcher.serialize(tmp, relative_path=True)
        for path in sorted(Path(tmp).iterdir()):
            rel = f"{prefix}{SCANN_DIR}/{path.name}"
            lake.write_bytes(f"{staging_rel}/{rel}", path.read_bytes())
            files.append(rel)
    ids = pa.table({"item_id": pa.array(index.item_ids)})
    lake.write_parquet(f"{staging_rel}/{prefix}{ITEM_IDS_FILE}", ids)
    info = {"format_version": FORMAT_VERSION, "settings": asdict(index.settings), "recall": index.recall}
    lake.write_json(f"{staging_rel}/{prefix}{INFO_FILE}", {**info, **info_fields})
    return [*files, f"{prefix}{ITEM_IDS_FILE}", f"{prefix}{INFO_FILE}"]


def _part_files(lake: Lake, dataset_rel: str, part: str) -> dict[str, str]:
    """The verified files of the published index's ``part`` ("" the two-tower's), by name within it."""
    prefix = f"{part}/" if part else ""
    by_name = {f.split("/run=", 1)[1].split("/", 1)[1]: f for f in lake.verified_files(dataset_rel)}
    return {name.removeprefix(prefix): rel for name, rel in by_name.items() if name.startswith(prefix)}


def load_index(lake: Lake, dataset_rel: str) -> ItemIndex:
    """Load the published index of ``dataset_rel`` (e.g. ``LakePaths.index(ds)``) through its manifest.

    Raises:
        ManifestError: nothing published there, or the published files are incomplete or inconsistent.
        pipelines.core.lake.CorruptArtifactError: a file differs from its checksum (checked before ScaNN
            reads it; the message names the dataset's file).
    """
    return _load_part(lake, dataset_rel, _part_files(lake, dataset_rel, ""))


def load_als_index(lake: Lake, ds: dt.date, als_version: str) -> ItemIndex | None:
    """The tree over ALS ``als_version``'s post factors the index stage of ``ds`` published, or None: no
    index published, none for ALS (the shards search exactly), or one for another ALS model.

    Raises:
        ManifestError: the published ALS files are incomplete or inconsistent.
        pipelines.core.lake.CorruptArtifactError: a file differs from its checksum.
    """
    dataset = LakePaths.index(ds)
    if not lake.is_published(dataset):
        return None
    files = _part_files(lake, dataset, ALS_PART)
    if INFO_FILE not in files:
        return None
    made_for = lake.read_json(files[INFO_FILE]).get("model_version")
    if made_for != als_version:
        log.info("ds=%s: the published ALS tree is of %s, not %s: exact search", ds, made_for, als_version)
        return None
    return _load_part(lake, dataset, files)


def _load_part(lake: Lake, dataset_rel: str, by_name: dict[str, str]) -> ItemIndex:
    from scann.scann_ops.py import scann_ops_pybind

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
    normalized = info.get("normalized", True)  # False: raw inner products (the ALS tree)
    return ItemIndex(searcher, item_ids, settings, recall=info.get("recall"), normalized=normalized)


@dataclass
class AlsTree:
    """What the index stage decided for a served ALS retriever: a checked tree over its post factors
    (``index``), or exact search (``index`` None, ``reason`` says why)."""

    model_version: str
    n_items: int
    build_seconds: float
    index: ItemIndex | None = None
    reason: str | None = None

    def fact(self) -> dict[str, Any]:
        """The ``als`` entry of the stage's result and of the published index's metadata."""
        fact: dict[str, Any] = {"model_version": self.model_version, "n_items": self.n_items}
        if self.index is None:
            return {**fact, "search": "exact", "reason": self.reason}
        return {
            **fact,
            "search": self.index.settings.mode,
            "recall": self.index.recall,
            "build_seconds": round(self.build_seconds, 3),
        }


def build_and_publish_index(
    lake: Lake,
    ds: dt.date,
    embeddings_table: pa.Table,
    queries: np.ndarray,
    config: IndexConfig,
    offsets: np.ndarray | None = None,
    als: AlsTree | None = None,
) -> IndexReport:
    """Index stage: build the item index of ``ds``, check its recall, publish it to ``index/ds=<ds>/``.

    Args:
        lake: where the index is published.
        ds: run date, ``YYYY-MM-DD``.
        embeddings_table: columns ``item_id`` (string) and ``embedding`` (list<float32>), one row per item.
        queries: ``(q, d)`` embeddings of real users, the sample the recall is measured on.
        config: index settings.
        offsets: the popularity prior's score offset of each row of ``embeddings_table`` (None: no prior).
        als: the served ALS retriever's tree, published next to the index when there is one.

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
    metadata = {
        "n_items": index.n_items,
        "dim": index.settings.dim,
        "recall": index.recall,
        "recall_k": recall_k,
        "recall_queries": num_queries,
        "settings": settings,
        "build_seconds": round(build_seconds, 3),
    }
    if als is not None and als.index is not None:
        files += _save_als(als, lake, staging)
        metadata["als"] = als.fact()
    lake.publish(dataset, staging, files, metadata=metadata, checksums=True)
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


def _save_als(als: AlsTree, lake: Lake, staging: str) -> list[str]:
    assert als.index is not None
    return save_index(
        als.index, lake, staging, ALS_PART, model_version=als.model_version, normalized=als.index.normalized
    )


def publish_als_index(lake: Lake, ds: dt.date, als: AlsTree) -> str:
    """Index stage of a system that retrieves with ALS and not the two-tower: publish the ALS tree alone
    to ``index/ds=<ds>/als/``.

    Returns:
        The dataset's URI.
    """
    assert als.index is not None
    dataset = LakePaths.index(ds)
    staging = lake.begin_publish(dataset)
    files = _save_als(als, lake, staging)
    lake.publish(dataset, staging, files, metadata={"als": als.fact()}, checksums=True)
    log.info("published the ALS tree of %d posts, recall %.4f", als.n_items, als.index.recall or 0.0)
    return lake.uri(dataset)


def als_tree(lake: Lake, ds: dt.date, system: ServedSystem, settings: Settings) -> AlsTree:
    """The tree over the post factors of ``system``'s ALS model for the catalog of ``ds``, checked on the
    folded-in histories of a sample of the users of the inputs' first shard; exact search below
    :func:`~pipelines.serving.index.tree_threshold` posts or when the tree fails the check.

    Raises:
        FileNotFoundError: the ALS model is not exported, or the inputs of ``ds`` are missing.
    """
    import pyarrow.compute as pc

    from pipelines.serving.model_store import ModelStore
    from pipelines.serving.retrievers import AlsRetriever, UserHistory

    assert system.als_version
    started = time.perf_counter()
    model = ModelStore(lake).get(ALS, system.als_version)
    catalog_ids = read_input(lake, ds, "items", ["item_id"]).column("item_id").combine_chunks()
    interactions = read_shard_input(lake, ds, "interactions", 0, settings.candidates.num_shards)
    users = interactions.column("user_id").unique()
    rng = np.random.default_rng(settings.index.seed)
    sample = rng.choice(len(users), min(len(users), settings.index.recall_sample_queries), replace=False)
    sampled_users = users.take(pa.array(np.sort(sample)))
    sampled = interactions.filter(pc.is_in(interactions.column("user_id"), sampled_users))
    history = UserHistory.from_interactions(sampled)
    retriever = AlsRetriever.build(history, model, catalog_ids, settings.index)
    seconds = time.perf_counter() - started
    n_items = len(retriever.catalog_rows)
    if retriever.index is not None:
        return AlsTree(system.als_version, n_items, seconds, retriever.index)
    if n_items < (threshold := tree_threshold(settings.index)):
        reason = f"{n_items} posts, fewer than the {threshold} a tree needs (index.brute_force_below)"
    else:
        reason = f"the tree's recall@{settings.index.recall_k} was below index.min_recall"
    return AlsTree(system.als_version, n_items, seconds, reason=reason)


def index_items(lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Build, recall-check and publish the ScaNN index of ``ds``'s item embeddings, and the tree over
    the post factors of a served ALS retriever.

    The recall is measured on real user queries: the user tower over a sample of ``ds``'s users (the
    folded-in histories of a sample of them for ALS). The item vectors carry the served system's
    popularity prior, from the ``items`` input of ``ds``.

    A served system that retrieves neither with the two-tower nor with ALS through a tree needs no index:
    nothing is published and the result says so.

    Raises:
        pipelines.serving.recall.IndexRecallError: recall below the configured floor (nothing is published).
        pipelines.serving.system.NoChampionError: no system is in force for ``ds``.
    """
    system = served_system(lake, ds, settings.use_current_system).system
    als = als_tree(lake, ds, system, settings) if ALS_RETRIEVER in system.retrievers else None
    if system.retriever != TWO_TOWER_RETRIEVER:
        if als is not None and als.index is not None:
            uri = publish_als_index(lake, ds, als)
            fact = als.fact()
            return {
                "uri": uri,
                "n_items": als.n_items,
                "recall": fact["recall"],
                "recall_k": min(settings.index.recall_k, als.n_items),
                "build_seconds": round(als.build_seconds, 2),
                "model_version": als.model_version,
                "als": fact,
            }
        reason = f"the served system ({system.label}) retrieves without the item index"
        if als is not None:
            reason += f"; its ALS factors are searched exactly ({als.reason})"
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
    report = build_and_publish_index(lake, ds, embeddings, queries, settings.index, offsets, als)
    result = {
        "uri": report.uri,
        "n_items": report.n_items,
        "recall": report.recall,
        "recall_k": report.recall_k,
        "build_seconds": round(report.build_seconds, 2),
        "model_version": version,
    }
    return result if als is None else {**result, "als": als.fact()}
