"""The item index: a ScaNN nearest-neighbour searcher over the item embeddings, and how it is built.

Search is maximum inner product over L2-normalised vectors, i.e. cosine similarity: item embeddings are
normalised at build time and queries at search time (normalising a query does not change its ranking).
Small catalogs use ScaNN's exact brute force; larger ones a k-means tree with anisotropic asymmetric
hashing and exact re-scoring of the best approximate hits, sized from the catalog (see
:func:`index_settings`), or a tree whose searched leaves are scored exactly (``exact_leaves``: cheap for
the few dimensions of ALS factors, where hashing loses too much). With a popularity prior
(:mod:`pipelines.serving.prior`) each item vector carries its score offset as one more coordinate and each
query a 1 there. An index built with ``normalize=False`` (the ALS post factors) searches raw inner
products instead: norms are part of the score. Reads and writes nothing;
:mod:`pipelines.serving.index_store` keeps it in the lake.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from pipelines.core.settings import IndexConfig
from pipelines.serving.prior import with_offsets, with_ones
from pipelines.serving.recall import check_index
from pipelines.serving.vectors import check_item_inputs, check_k, normalize_queries

log = logging.getLogger(__name__)

MISSING_ID = ""
"""Id returned in the padding of a search row when the searched leaves held fewer than ``k`` items."""

# ScaNN trains its k-means tree and hashing codebooks on a sample of this many datapoints.
TRAINING_SAMPLE_SIZE = 100_000
# Below this many items a tree is pointless (and hashing needs 16+ points per codebook): always exact.
MIN_TREE_ITEMS = 1000
# Asymmetric hashing: 2 dimensions per 16-centre codebook block, anisotropic loss for inner products.
AH_DIMS_PER_BLOCK = 2
AH_ANISOTROPIC_THRESHOLD = 0.2
# A tree with exact leaves (raw inner products of uneven norms) also files each datapoint in a second leaf
# chosen by SOAR (spilling with orthogonality-amplified residuals), which ScaNN made for inner products.
SOAR_LAMBDA = 1.5


@dataclass(frozen=True)
class IndexSettings:
    """The ScaNN settings chosen for one catalog (see :func:`index_settings`); ``dim`` is the query
    dimension, and ``score_offset`` says the datapoints carry a prior offset as one more coordinate."""

    mode: Literal["brute_force", "tree_ah", "tree_exact"]
    n_items: int
    dim: int
    num_neighbors: int
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder_multiplier: int = 0
    training_sample_size: int = 0
    score_offset: bool = False

    def reorder_for(self, k: int) -> int:
        """Approximate hits re-scored exactly for a search of ``k`` neighbours (0 = no reordering)."""
        if self.mode == "brute_force" or self.reorder_multiplier == 0:
            return 0
        return min(self.n_items, self.reorder_multiplier * k)


def tree_threshold(config: IndexConfig) -> int:
    """The fewest items an index searches through a tree (fewer: exact): ``config.brute_force_below``, and
    never fewer than :data:`MIN_TREE_ITEMS`."""
    return max(config.brute_force_below, MIN_TREE_ITEMS)


def index_settings(n_items: int, dim: int, config: IndexConfig, exact_leaves: bool = False) -> IndexSettings:
    """Choose ScaNN settings for a catalog of ``n_items`` vectors of ``dim`` dimensions.

    Below ``config.brute_force_below`` items (and always below :data:`MIN_TREE_ITEMS`) the index is
    exact. Above it, the tree has
    ``leaves_per_sqrt_items * sqrt(n)`` leaves (so a leaf holds about ``sqrt(n) / leaves_per_sqrt_items``
    items) and a query searches ``leaves_to_search_fraction`` of them, scoring their items by asymmetric
    hashing and re-scoring the best exactly, or (``exact_leaves``) scoring them all exactly;
    ``num_neighbors`` is clamped to the catalog size.

    Raises:
        ValueError: ``n_items`` or ``dim`` is not positive.
    """
    if n_items < 1 or dim < 1:
        raise ValueError(f"an index needs at least one item and one dimension, got n={n_items}, d={dim}")
    num_neighbors = min(config.num_neighbors, n_items)
    if n_items < tree_threshold(config):
        return IndexSettings("brute_force", n_items, dim, num_neighbors)
    num_leaves = max(1, min(n_items, round(config.leaves_per_sqrt_items * math.sqrt(n_items))))
    leaves_to_search = max(1, min(num_leaves, math.ceil(config.leaves_to_search_fraction * num_leaves)))
    return IndexSettings(
        "tree_exact" if exact_leaves else "tree_ah",
        n_items,
        dim,
        num_neighbors,
        num_leaves=num_leaves,
        leaves_to_search=leaves_to_search,
        reorder_multiplier=0 if exact_leaves else config.reorder_multiplier,
        training_sample_size=min(n_items, TRAINING_SAMPLE_SIZE),
    )


@dataclass
class ItemIndex:
    """A searchable index of the item catalog: ScaNN datapoint ``j`` is the item ``item_ids[j]``.

    ``embeddings`` holds the normalised item vectors the index was built from and ``offsets`` their prior
    score offsets (None without a prior); they are kept after a build so the recall check can compare
    with exact search, and are None for an index loaded from the lake. ``normalized`` False: the vectors
    and the queries are searched as they are (inner products), not L2-normalised (cosine).
    """

    searcher: Any
    item_ids: np.ndarray
    settings: IndexSettings
    embeddings: np.ndarray | None = None
    recall: float | None = None
    offsets: np.ndarray | None = None
    normalized: bool = True

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def datapoints(self) -> np.ndarray:
        """The vectors ScaNN holds: ``embeddings``, with the ``offsets`` column when there is a prior.

        Raises:
            ValueError: the index was loaded from the lake (it keeps no vectors).
        """
        if self.embeddings is None:
            raise ValueError("this index holds no embeddings (it was loaded from the lake)")
        return self.embeddings if self.offsets is None else with_offsets(self.embeddings, self.offsets)

    def query_vectors(self, queries: np.ndarray) -> np.ndarray:
        """``(q, dim)`` user vectors as the index searches them: L2-normalised (when the index is), then a
        last coordinate 1 when the datapoints carry prior offsets.

        Raises:
            ValueError: bad ``queries`` shape, dtype or values.
        """
        unit = normalize_queries(queries, self.settings.dim, self.normalized)
        return with_ones(unit) if self.settings.score_offset else unit

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search`, but returns datapoint positions (int64, -1 in the padding)."""
        queries = self.query_vectors(queries)
        k = check_k(k, self.n_items)
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
            plus the items' prior offsets (float32). A row is padded with id :data:`MISSING_ID` and
            score NaN only if the searched tree leaves held fewer than ``k`` items.

        Raises:
            ValueError: bad ``queries`` shape, dtype or values, or ``k < 1``.
        """
        positions, scores = self.search_positions(queries, k)
        ids = self.item_ids[np.maximum(positions, 0)]
        ids[positions < 0] = MISSING_ID
        return ids, scores


def _tree(builder: Any, settings: IndexSettings) -> Any:
    """The k-means tree of ``settings`` on a ScaNN builder (with SOAR spilling for exact leaves)."""
    spilling = {"soar_lambda": SOAR_LAMBDA} if settings.mode == "tree_exact" else {}
    return builder.tree(
        num_leaves=settings.num_leaves,
        num_leaves_to_search=settings.leaves_to_search,
        training_sample_size=settings.training_sample_size,
        # k-means++ seeding makes builds reproducible; ScaNN's random seeding differs run to run.
        random_init=False,
        **spilling,
    )


def build_scann_index(
    item_ids: np.ndarray,
    embeddings: np.ndarray,
    config: IndexConfig,
    queries: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    normalize: bool = True,
    exact_leaves: bool = False,
) -> ItemIndex:
    """Build a ScaNN index over the L2-normalised ``embeddings`` and, given ``queries``, check its recall.

    Args:
        item_ids: ``(n,)`` unique non-empty item id strings; row ``j`` of ``embeddings`` is ``item_ids[j]``.
        embeddings: ``(n, d)`` float item embeddings (float32 preferred), finite and non-zero.
        config: index settings; see :func:`index_settings` for how they scale with ``n``.
        queries: ``(q, d)`` real user query embeddings for the recall check; None skips the check.
        offsets: ``(n,)`` finite prior score offsets added to each item's cosine
            (:func:`pipelines.serving.prior.prior_offsets`); None: no prior.
        normalize: False searches the raw inner products of ``embeddings`` and the queries instead of
            their cosines (nothing is normalised, all-zero vectors are allowed).
        exact_leaves: a tree catalog scores the items of its searched leaves exactly instead of by
            asymmetric hashing (see :func:`index_settings`).

    Returns:
        The index, with ``recall`` set when ``queries`` was given.

    Raises:
        ValueError: malformed inputs; the message names the offending rows or ids.
        IndexRecallError: recall@``config.recall_k`` on the query sample is below ``config.min_recall``.
    """
    from scann.scann_ops.py import scann_ops_pybind

    item_ids, unit = check_item_inputs(item_ids, embeddings, normalize)
    settings = index_settings(len(unit), unit.shape[1], config, exact_leaves)
    if offsets is not None:
        offsets = np.asarray(offsets, np.float32)
        if offsets.shape != (len(unit),) or not np.isfinite(offsets).all():
            raise ValueError(
                f"offsets must be {len(unit)} finite values, one per item; got shape {offsets.shape}"
            )
        settings = replace(settings, score_offset=True)
    index = ItemIndex(None, item_ids, settings, embeddings=unit, offsets=offsets, normalized=normalize)
    started = time.perf_counter()
    builder = scann_ops_pybind.builder(index.datapoints, settings.num_neighbors, "dot_product")
    if settings.mode == "brute_force":
        builder = builder.score_brute_force()
    elif settings.mode == "tree_exact":
        builder = _tree(builder, settings).score_brute_force()
    else:
        builder = _tree(builder, settings).score_ah(
            AH_DIMS_PER_BLOCK,
            anisotropic_quantization_threshold=AH_ANISOTROPIC_THRESHOLD,
            training_sample_size=settings.training_sample_size,
        )
        reorder = settings.reorder_for(settings.num_neighbors)
        if reorder:
            builder = builder.reorder(reorder)
    index.searcher = builder.build()
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
