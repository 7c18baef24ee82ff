"""Item index stage: a ScaNN nearest-neighbour index over the item embeddings of one run date.

Reads the item embeddings of ``ds`` (a table of ``item_id`` and ``embedding list<float32>``) and a sample of
real user query embeddings; writes ``index/ds=<ds>/`` in the lake: the serialised ScaNN searcher under
``scann/``, the item ids in datapoint order (``item_ids.parquet``) and ``index.json`` with the settings and
the measured recall. The manifest is written last and only when recall@K against exact brute force reaches
``IndexConfig.min_recall``, so a degraded index is never published.

Search is maximum inner product over L2-normalised vectors, i.e. cosine similarity: item embeddings are
normalised at build time and queries at search time (normalising a query does not change its ranking).
Small catalogs use ScaNN's exact brute force; larger ones a k-means tree with anisotropic asymmetric
hashing and exact re-scoring of the best approximate hits, sized from the catalog (see
:func:`index_settings`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.core.settings import IndexConfig
from pipelines.core.tables import require_columns

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCANN_DIR = "scann"
ITEM_IDS_FILE = "item_ids.parquet"
INFO_FILE = "index.json"
MISSING_ID = ""
"""Id returned in the padding of a search row when the searched leaves held fewer than ``k`` items."""

# ScaNN trains its k-means tree and hashing codebooks on a sample of this many datapoints.
TRAINING_SAMPLE_SIZE = 100_000
# Below this many items a tree is pointless (and hashing needs 16+ points per codebook): always exact.
MIN_TREE_ITEMS = 1000
# Asymmetric hashing: 2 dimensions per 16-centre codebook block, anisotropic loss for inner products.
AH_DIMS_PER_BLOCK = 2
AH_ANISOTROPIC_THRESHOLD = 0.2
# The exact baseline keeps each block of query x item scores below this size.
EXACT_BLOCK_BYTES = 64 * 2**20
EXACT_ITEM_BLOCK = 32_768


class IndexRecallError(PermanentError):
    """The approximate index missed too many of the exact nearest neighbours to be published."""

    def __init__(self, recall: float, min_recall: float, k: int, num_queries: int) -> None:
        super().__init__(
            f"index recall@{k} = {recall:.4f} on {num_queries} user queries is below min_recall="
            f"{min_recall:.4f}; search more leaves (leaves_to_search_fraction) or raise reorder_multiplier"
        )
        self.recall = recall
        self.min_recall = min_recall
        self.k = k
        self.num_queries = num_queries


@dataclass(frozen=True)
class IndexSettings:
    """The ScaNN settings chosen for one catalog (see :func:`index_settings`)."""

    mode: Literal["brute_force", "tree_ah"]
    n_items: int
    dim: int
    num_neighbors: int
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder_multiplier: int = 0
    training_sample_size: int = 0

    def reorder_for(self, k: int) -> int:
        """Approximate hits re-scored exactly for a search of ``k`` neighbours (0 = no reordering)."""
        if self.mode == "brute_force" or self.reorder_multiplier == 0:
            return 0
        return min(self.n_items, self.reorder_multiplier * k)


def index_settings(n_items: int, dim: int, config: IndexConfig) -> IndexSettings:
    """Choose ScaNN settings for a catalog of ``n_items`` vectors of ``dim`` dimensions.

    Below ``config.brute_force_below`` items (and always below :data:`MIN_TREE_ITEMS`) the index is
    exact. Above it, the tree has
    ``leaves_per_sqrt_items * sqrt(n)`` leaves (so a leaf holds about ``sqrt(n) / leaves_per_sqrt_items``
    items) and a query searches ``leaves_to_search_fraction`` of them; ``num_neighbors`` is clamped to the
    catalog size.

    Raises:
        ValueError: ``n_items`` or ``dim`` is not positive.
    """
    if n_items < 1 or dim < 1:
        raise ValueError(f"an index needs at least one item and one dimension, got n={n_items}, d={dim}")
    num_neighbors = min(config.num_neighbors, n_items)
    if n_items < max(config.brute_force_below, MIN_TREE_ITEMS):
        return IndexSettings("brute_force", n_items, dim, num_neighbors)
    num_leaves = max(1, min(n_items, round(config.leaves_per_sqrt_items * math.sqrt(n_items))))
    leaves_to_search = max(1, min(num_leaves, math.ceil(config.leaves_to_search_fraction * num_leaves)))
    return IndexSettings(
        "tree_ah",
        n_items,
        dim,
        num_neighbors,
        num_leaves=num_leaves,
        leaves_to_search=leaves_to_search,
        reorder_multiplier=config.reorder_multiplier,
        training_sample_size=min(n_items, TRAINING_SAMPLE_SIZE),
    )


@dataclass
class ItemIndex:
    """A searchable index of the item catalog: ScaNN datapoint ``j`` is the item ``item_ids[j]``.

    ``embeddings`` holds the normalised item vectors the index was built from; it is kept after a build
    so the recall check can compare with exact search, and is None for an index loaded from the lake.
    """

    searcher: Any
    item_ids: np.ndarray
    settings: IndexSettings
    embeddings: np.ndarray | None = None
    recall: float | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search`, but returns datapoint positions (int64, -1 in the padding)."""
        queries = normalize_queries(queries, self.settings.dim)
        k = _check_k(k, self.n_items)
        if len(queries) == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        reorder = self.settings.reorder_for(k)
        positions, scores = self.searcher.search_batched_parallel(
            queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder or None
        )
        positions = positions.astype(np.int64)
        # ScaNN pads a row with (0, NaN) when the searched leaves held fewer than k items.
        positions[np.isnan(scores)] = -1
        return positions, scores

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar items of each query, best first.

        Args:
            queries: ``(q, dim)`` float array of user embeddings; each row is L2-normalised first (an
                all-zero row scores 0 against every item).
            k: neighbours per query; clamped to the catalog size.

        Returns:
            ``(ids, scores)``, both ``(q, min(k, n_items))``: item id strings and cosine similarities
            (float32). A row is padded with id :data:`MISSING_ID` and score NaN only if the searched tree
            leaves held fewer than ``k`` items.

        Raises:
            ValueError: bad ``queries`` shape, dtype or values, or ``k < 1``.
        """
        positions, scores = self.search_positions(queries, k)
        ids = self.item_ids[np.maximum(positions, 0)]
        ids[positions < 0] = MISSING_ID
        return ids, scores


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


# -- input checks ------------------------------------------------------------------------------------


def _as_float32_matrix(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (rows, dim), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {values.dtype}")
    return np.ascontiguousarray(values, dtype=np.float32)


def _first_rows(mask: np.ndarray, limit: int = 5) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:limit]]


def _check_item_inputs(item_ids: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    embeddings = _as_float32_matrix("embeddings", embeddings)
    item_ids = np.asarray(item_ids)
    if item_ids.ndim != 1:
        raise ValueError(f"item_ids must be 1-d, got shape {item_ids.shape}")
    if len(item_ids) != len(embeddings):
        raise ValueError(f"{len(item_ids)} item_ids but {len(embeddings)} embedding rows")
    if len(item_ids) == 0:
        raise ValueError("cannot index an empty catalog: no item embeddings")
    if embeddings.shape[1] == 0:
        raise ValueError("embeddings have zero dimensions")
    not_str = [i for i, v in enumerate(item_ids.tolist()) if not isinstance(v, str) or not v]
    if not_str:
        raise ValueError(
            f"item_ids must be non-empty strings; rows {not_str[:5]} hold {item_ids[not_str[:5]].tolist()}"
        )
    item_ids = item_ids.astype(str)
    unique, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1][:5].tolist()
        rows = {d: _first_rows(item_ids == d) for d in dupes}
        raise ValueError(f"duplicate item_ids (id: rows): {rows}")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        rows = _first_rows(bad)
        raise ValueError(
            f"embeddings hold NaN or infinite values in {int(bad.sum())} rows, e.g. rows {rows} "
            f"(items {item_ids[rows].tolist()})"
        )
    norms = np.linalg.norm(embeddings, axis=1)
    zero = norms == 0
    if zero.any():
        rows = _first_rows(zero)
        raise ValueError(
            f"{int(zero.sum())} item embeddings are all zeros and have no direction, e.g. rows {rows} "
            f"(items {item_ids[rows].tolist()})"
        )
    return item_ids, embeddings / norms[:, None]


def normalize_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Check ``queries`` is a finite ``(q, dim)`` float array and return it L2-normalised, as float32.

    Raises:
        ValueError: wrong shape or dtype, or NaN/infinite values (the message names the rows).
    """
    queries = _as_float32_matrix("queries", queries)
    if queries.shape[1] != dim:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the index has {dim}")
    bad = ~np.isfinite(queries).all(axis=1)
    if bad.any():
        raise ValueError(f"queries hold NaN or infinite values in rows {_first_rows(bad)}")
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    return queries / np.where(norms > 0, norms, 1.0)


def _check_k(k: int, n_items: int) -> int:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(int(k), n_items)


# -- exact search ------------------------------------------------------------------------------------


def exact_top_k(
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    block_bytes: int = EXACT_BLOCK_BYTES,
    item_block: int = EXACT_ITEM_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products by blocked matrix products, with memory bounded by ``block_bytes``.

    The catalog is scanned in blocks of ``item_block`` items against blocks of queries sized so one score
    block stays below ``block_bytes``. A small first block seeds each query's running top-k with
    ``argpartition``; later blocks only admit scores above the query's current k-th best, which soon is a
    small fraction of a block, so the matrix products and one comparison pass dominate the cost.

    Args:
        embeddings: ``(n, d)`` float32 item vectors (as given: no normalisation here).
        queries: ``(q, d)`` float32 query vectors.
        k: neighbours per query, clamped to ``n``.
        block_bytes: memory for one block of scores.
        item_block: items per block.

    Returns:
        ``(positions int64 (q, k), scores float32 (q, k))``, best first; equal scores in item order.
    """
    n = len(embeddings)
    k = _check_k(k, n)
    item_block = min(n, max(item_block, k))
    query_block = max(1, block_bytes // (4 * item_block))
    seed = min(n, item_block, max(4 * k, 4096))
    bounds = [0, *range(seed, n, item_block), n]
    # Score and mask buffers are reused: fresh 64 MiB arrays per block would cost page faults each time.
    score_buffer = np.empty(query_block * item_block, np.float32)
    mask_buffer = np.empty(query_block * item_block, np.bool_)
    out_pos = np.empty((len(queries), k), np.int64)
    out_scores = np.empty((len(queries), k), np.float32)
    for q0 in range(0, len(queries), query_block):
        block = queries[q0 : q0 + query_block]
        best_scores = np.full((len(block), k), -np.inf, np.float32)
        best_pos = np.full((len(block), k), -1, np.int64)
        for i0, i1 in itertools.pairwise(bounds):
            size = len(block) * (i1 - i0)
            scores = score_buffer[:size].reshape(len(block), i1 - i0)
            np.matmul(block, embeddings[i0:i1].T, out=scores)
            admitted = mask_buffer[:size].reshape(scores.shape)
            cand_scores, cand_pos = _block_candidates(scores, best_scores.min(axis=1), k, admitted)
            if cand_scores.shape[1] == 0:
                continue
            merged_scores = np.concatenate([best_scores, cand_scores], axis=1)
            merged_pos = np.concatenate([best_pos, cand_pos + i0], axis=1)
            keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(merged_scores, keep, axis=1)
            best_pos = np.take_along_axis(merged_pos, keep, axis=1)
        order = np.lexsort((best_pos, -best_scores), axis=1)
        out_scores[q0 : q0 + len(block)] = np.take_along_axis(best_scores, order, axis=1)
        out_pos[q0 : q0 + len(block)] = np.take_along_axis(best_pos, order, axis=1)
    return out_pos, out_scores


def _block_candidates(
    scores: np.ndarray, threshold: np.ndarray, k: int, admitted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of one block that may enter the running top-k, as padded ``(rows, m)`` arrays.

    ``admitted`` is a scratch boolean array of the shape of ``scores``.
    """
    np.greater(scores, threshold[:, None], out=admitted)
    # Few admitted scores: gather them into padded rows. Many (the first blocks, or a row whose
    # neighbourhood only starts here): a per-row argpartition of the whole block is cheaper.
    if np.count_nonzero(admitted) <= admitted.size // 4:
        # 1-d nonzero skips runs of zero bytes quickly; the 2-d form is many times slower.
        rows, cols = np.divmod(np.flatnonzero(admitted), scores.shape[1])
        counts = np.bincount(rows, minlength=len(scores))
        width = int(counts.max()) if len(rows) else 0
        if width * len(scores) <= admitted.size // 4:
            slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            cand_scores = np.full((len(scores), width), -np.inf, np.float32)
            cand_pos = np.full((len(scores), width), -1, np.int64)
            cand_scores[rows, slot] = scores[rows, cols]
            cand_pos[rows, slot] = cols
            return cand_scores, cand_pos
    if scores.shape[1] <= k:
        return scores.copy(), np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


# -- build and check -----------------------------------------------------------------------------------


def build_index(
    item_ids: np.ndarray,
    embeddings: np.ndarray,
    config: IndexConfig,
    queries: np.ndarray | None = None,
) -> ItemIndex:
    """Build a ScaNN index over the L2-normalised ``embeddings`` and, given ``queries``, check its recall.

    Args:
        item_ids: ``(n,)`` unique non-empty item id strings; row ``j`` of ``embeddings`` is ``item_ids[j]``.
        embeddings: ``(n, d)`` float item embeddings (float32 preferred), finite and non-zero.
        config: index settings; see :func:`index_settings` for how they scale with ``n``.
        queries: ``(q, d)`` real user query embeddings for the recall check; None skips the check.

    Returns:
        The index, with ``recall`` set when ``queries`` was given.

    Raises:
        ValueError: malformed inputs; the message names the offending rows or ids.
        IndexRecallError: recall@``config.recall_k`` on the query sample is below ``config.min_recall``.
    """
    from scann.scann_ops.py import scann_ops_pybind

    item_ids, unit = _check_item_inputs(item_ids, embeddings)
    settings = index_settings(len(unit), unit.shape[1], config)
    started = time.perf_counter()
    builder = scann_ops_pybind.builder(unit, settings.num_neighbors, "dot_product")
    if settings.mode == "brute_force":
        builder = builder.score_brute_force()
    else:
        builder = builder.tree(
            num_leaves=settings.num_leaves,
            num_leaves_to_search=settings.leaves_to_search,
            training_sample_size=settings.training_sample_size,
            # k-means++ seeding makes builds reproducible; ScaNN's random seeding differs run to run.
            random_init=False,
        ).score_ah(
            AH_DIMS_PER_BLOCK,
            anisotropic_quantization_threshold=AH_ANISOTROPIC_THRESHOLD,
            training_sample_size=settings.training_sample_size,
        )
        reorder = settings.reorder_for(settings.num_neighbors)
        if reorder:
            builder = builder.reorder(reorder)
    index = ItemIndex(builder.build(), item_ids, settings, embeddings=unit)
    log.info(
        "built %s index of %d items x %d dims in %.1f s (%s)",
        settings.mode,
        settings.n_items,
        settings.dim,
        time.perf_counter() - started,
        asdict(settings),
    )
    if queries is not None:
        check_index(index, queries, config)
    return index


def measure_recall(index: ItemIndex, queries: np.ndarray, k: int) -> float:
    """Mean share of each query's exact top-``k`` items that the index also returns in its top ``k``.

    Args:
        index: a freshly built index (it must still hold its embeddings).
        queries: ``(q, d)`` user query embeddings, normalised here like in :meth:`ItemIndex.search`.
        k: neighbours compared, clamped to the catalog size.

    Raises:
        ValueError: the index has no embeddings (loaded from the lake), no queries, or bad queries.
    """
    if index.embeddings is None:
        raise ValueError("this index holds no embeddings (it was loaded); recall is measured at build time")
    queries = normalize_queries(queries, index.settings.dim)
    if len(queries) == 0:
        raise ValueError("measuring recall needs at least one query")
    k = _check_k(k, index.n_items)
    started = time.perf_counter()
    approx, _ = index.search_positions(queries, k)
    approx_seconds = time.perf_counter() - started
    exact, _ = exact_top_k(index.embeddings, queries, k)
    # Padding (-1) repeats within a row, so it must go before an intersection that assumes unique values.
    hits = sum(
        np.intersect1d(a[a >= 0], e, assume_unique=True).size for a, e in zip(approx, exact, strict=True)
    )
    recall = hits / (len(queries) * k)
    log.info(
        "recall@%d = %.4f on %d queries (index: %.0f queries/s)",
        k,
        recall,
        len(queries),
        len(queries) / max(approx_seconds, 1e-9),
    )
    return recall


def check_index(index: ItemIndex, queries: np.ndarray, config: IndexConfig) -> float:
    """Measure recall@``config.recall_k`` on up to ``config.recall_sample_queries`` queries; store it.

    Returns:
        The recall, also set on ``index.recall``.

    Raises:
        IndexRecallError: the recall is below ``config.min_recall``.
        ValueError: no queries, or bad queries.
    """
    queries = np.asarray(queries)
    if len(queries) > config.recall_sample_queries:
        rng = np.random.default_rng(config.seed)
        queries = queries[np.sort(rng.choice(len(queries), config.recall_sample_queries, replace=False))]
    k = min(config.recall_k, index.n_items)
    recall = measure_recall(index, queries, k)
    index.recall = recall
    if recall < config.min_recall:
        raise IndexRecallError(recall, config.min_recall, k, len(queries))
    return recall


# -- lake I/O -----------------------------------------------------------------------------------------


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
    """
    from scann.scann_ops.py import scann_ops_pybind

    files = lake.manifest_files(dataset_rel)
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


def embeddings_from_table(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Split an item embeddings table into ``(item_ids, (n, d) float32 matrix)``.

    Raises:
        ValueError: missing columns, null ids or vectors, non-float vectors, or vectors of unequal length
            (the message names the rows).
    """
    require_columns(table, ("item_id", "embedding"), "embeddings table")
    ids = table.column("item_id").combine_chunks()
    vectors = table.column("embedding").combine_chunks()
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        raise ValueError(f"embeddings column item_id must be strings, got {ids.type}")
    list_type = vectors.type
    is_list = pa.types.is_list(list_type) or pa.types.is_large_list(list_type)
    if not (is_list or pa.types.is_fixed_size_list(list_type)) or not pa.types.is_floating(
        list_type.value_type
    ):
        raise ValueError(f"embeddings column embedding must be list<float32>, got {list_type}")
    for name, column in (("item_id", ids), ("embedding", vectors)):
        if column.null_count:
            rows = _first_rows(column.is_null().to_numpy(zero_copy_only=False))
            raise ValueError(f"embeddings table has null {name} in rows {rows}")
    item_ids = np.asarray(ids.to_pylist(), dtype=object)
    if len(vectors) == 0:
        return item_ids, np.empty((0, 0), np.float32)
    lengths = pc.list_value_length(vectors).to_numpy()
    uneven = lengths != lengths[0]
    if uneven.any():
        rows = _first_rows(uneven)
        raise ValueError(
            f"embedding vectors differ in length: row 0 has {lengths[0]}, rows {rows} have "
            f"{lengths[rows].tolist()} (items {item_ids[rows].tolist()})"
        )
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return item_ids, flat.reshape(len(vectors), int(lengths[0]))


def build_and_publish_index(
    lake: Lake,
    ds: dt.date,
    embeddings_table: pa.Table,
    queries: np.ndarray,
    config: IndexConfig,
) -> IndexReport:
    """Index stage: build the item index of ``ds``, check its recall, publish it to ``index/ds=<ds>/``.

    Args:
        lake: where the index is published.
        ds: run date, ``YYYY-MM-DD``.
        embeddings_table: columns ``item_id`` (string) and ``embedding`` (list<float32>), one row per item.
        queries: ``(q, d)`` embeddings of real users, the sample the recall is measured on.
        config: index settings.

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
    index = build_index(item_ids, embeddings, config, queries)
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
