"""The models a replayed night's candidate systems need, trained on data before that night only.

Each model gets a registry version name and goes into the :class:`ModelStore`, so a replay serves it by
version exactly as the nightly job serves an exported one; only the models of the promoted system are
exported afterwards (``pipelines.jobs.training``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.model_settings import RankerConfig, TwoTowerConfig
from pipelines.core.paths import ALS, RANKER, TWO_TOWER
from pipelines.core.schema import RANKING_DATASET, RETRIEVAL_DATASET, SERVING_INPUTS
from pipelines.core.settings import Settings
from pipelines.core.sql_params import sql_params
from pipelines.core.warehouse import Warehouse
from pipelines.serving.model_store import ModelStore
from pipelines.training.registry import new_version

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trained:
    """A model trained for a night: its version in the store, what it is, and what produced it."""

    kind: str
    version: str
    result: Any
    config: dict[str, Any]


class NightModels:
    """Trains two-tower, ALS and ranker models for nights and keeps them in ``store`` by version."""

    def __init__(self, warehouse: Warehouse, settings: Settings, store: ModelStore) -> None:
        self.warehouse, self.settings, self.store = warehouse, settings, store
        self.trained: dict[str, Trained] = {}

    def _keep(
        self, kind: str, served_day: dt.date, result: Any, model: Any, config: dict[str, Any]
    ) -> Trained:
        version = new_version(served_day, {"kind": kind, **config})
        self.store.put(kind, version, model)
        self.trained[version] = Trained(kind, version, result, config)
        return self.trained[version]

    def two_tower(self, night: dt.date, variant: dict[str, Any]) -> Trained | None:
        """The two-tower with ``variant`` on top of the settings, trained on examples before ``night``;
        None when its window holds fewer than ``selection.min_train_examples`` examples."""
        from pipelines.training.two_tower import train_two_tower

        config = TwoTowerConfig.model_validate({**self.settings.two_tower.model_dump(), **variant})
        served_day = night - dt.timedelta(days=1)
        examples = self.warehouse.run_query(
            RETRIEVAL_DATASET, served_day, train_days=config.train_days, eval_days=0
        )
        if examples.num_rows < self.settings.selection.min_train_examples:
            log.info("two-tower %s for %s: %d examples, too few", variant, night, examples.num_rows)
            return None
        catalog = self.warehouse.run_query(
            SERVING_INPUTS["items"], served_day, **sql_params(self.settings), max_item_age_days=0
        )
        result = train_two_tower(examples, catalog, config)
        return self._keep(TWO_TOWER, served_day, result, result.towers, config.model_dump())

    def als(
        self, night: dt.date, interactions: pa.Table, factors: int, regularization: float
    ) -> Trained | None:
        """ALS with ``factors`` and ``regularization`` on the engagements of the history window before
        ``night``."""
        from pipelines.training.als import AlsParams, train_als
        from pipelines.training.interactions import interaction_matrix

        items = interactions.column("item_id").unique().sort()
        matrix = interaction_matrix(interactions, items)
        if matrix.counts.nnz == 0:
            return None
        params = AlsParams(factors=factors, regularization=regularization)
        model = train_als(matrix.counts, items, params)
        served_day = night - dt.timedelta(days=1)
        return self._keep(ALS, served_day, model, model, dataclasses.asdict(params))

    def _ranker(self, served_day: dt.date, rows: pa.Table, scores: np.ndarray, source: str) -> Trained | None:
        from pipelines.training.ranker import train_ranker

        config: RankerConfig = self.settings.ranker
        try:
            result = train_ranker(rows, scores, config)
        except ValueError as exc:  # no (user, day) group with a positive label in a split
            log.info("no %s ranker for %s: %s", source, served_day, exc)
            return None
        model = result.ranker.compile() if config.compiled_scoring else result.ranker
        return self._keep(RANKER, served_day, result, model, {**config.model_dump(), "source": source})

    def ranker_from_impressions(
        self, night: dt.date, two_tower_version: str, popularity_prior: float = 0.0
    ) -> Trained | None:
        """A ranker on the logged impressions before ``night``, scored by the two-tower it will re-order
        (with its ``popularity_prior``) through an index of the served day's catalog, as serving
        retrieves; None when the data logs no impressions."""
        from pipelines.serving.index import build_scann_index
        from pipelines.serving.prior import prior_offsets
        from pipelines.training.retrieval_scores import retrieval_scores_for_rows

        config = self.settings.ranker
        served_day = night - dt.timedelta(days=1)
        rows = self.warehouse.run_query(
            RANKING_DATASET, served_day, train_days=config.train_days, eval_days=config.eval_days
        )
        if rows.num_rows == 0:
            return None
        catalog = self.warehouse.run_query(
            SERVING_INPUTS["items"], served_day, **sql_params(self.settings), max_item_age_days=0
        )
        towers = self.store.get(TWO_TOWER, two_tower_version)
        ids = catalog.column("item_id").combine_chunks()
        offsets = prior_offsets(catalog, popularity_prior, towers.config.temperature)
        index = build_scann_index(
            np.asarray(ids.to_pylist(), object),
            towers.embed_items(catalog),
            self.settings.index,
            offsets=offsets,
        )
        scores = retrieval_scores_for_rows(
            towers.embed_users,
            rows,
            ids,
            index.embeddings,
            index.search_positions,
            config.retrieval_depth,
            item_offsets=offsets,
        )
        return self._ranker(served_day, rows, scores, "impressions")

    def ranker_from_replay(self, served_day: dt.date, rows: pa.Table, scores: np.ndarray) -> Trained | None:
        """A ranker for the night after ``served_day`` on earlier nights' retrieved posts, labelled by what
        users did after each night (``Replay.ranking_rows``): for data with no impression log, or when it
        re-orders better.

        The replay retrieves as deep as the system serves, often deeper than the ranker's
        ``retrieval_depth``; ranks beyond it become ``retrieval_depth + 1``, the value the ranker's
        ``retrieval_rank`` feature gives them when it scores served lists."""
        scores = np.column_stack(
            [scores[:, 0], np.minimum(scores[:, 1], self.settings.ranker.retrieval_depth + 1)]
        )
        return self._ranker(served_day, rows, scores, "retrieval")
