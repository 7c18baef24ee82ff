"""Replay a past night: make the lists a system would have published from the data before the night, with
the very serving code of the nightly job, and score them on what users did in the window after it.

A :class:`Night` holds the serving inputs of the day before the night (queried from the warehouse as the
nightly export would) and the truth of the window. :class:`Replay` builds a system's serving context for
it (the retriever, the ranker, diversification, the filters) and runs the list assembly for the evaluated
users; nothing is written to the lake.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.paths import RANKER, TWO_TOWER
from pipelines.core.run_date import end_of_day
from pipelines.core.settings import Settings
from pipelines.core.warehouse import Warehouse
from pipelines.evaluation.nights import night_truth
from pipelines.evaluation.scoring import ListScores, score_lists
from pipelines.serving.batch import UserBatch
from pipelines.serving.checks import check_lists
from pipelines.serving.context import ServingContext, build_context, no_vectors
from pipelines.serving.inputs import query_inputs
from pipelines.serving.lists import lists_for, retrieved_pairs
from pipelines.serving.model_store import ModelStore
from pipelines.serving.retrieval import make_retriever
from pipelines.serving.sharding import crc32_of
from pipelines.serving.system import ServedSystem
from pipelines.serving.timing import StageTimer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Night:
    """A past night: the serving inputs of the day before it and what users did in the window after it.

    Attributes:
        night: the first day of the window; the lists are those of ``night - 1``.
        window_days: the window's length.
        inputs: the serving inputs of ``night - 1`` (``users``, ``items``, ``seen``, ``interactions``, ...).
        truth: ``user_id, item_id`` pairs of the evaluated users (see ``sql/queries/evaluation/truth.sql``).
        eval_users: the users scored: served users with something to find (a seeded sample beyond
            ``selection.max_eval_users``), sorted.
        fresh_items: posts younger than ``selection.fresh_days`` at the night.
    """

    night: dt.date
    window_days: int
    inputs: dict[str, pa.Table]
    truth: pa.Table
    eval_users: pa.Array
    fresh_items: pa.Array

    @property
    def served_day(self) -> dt.date:
        return self.night - dt.timedelta(days=1)

    def users(self, user_ids: pa.Array | None = None) -> pa.Table:
        """The ``users`` input rows of ``user_ids`` (the evaluated users by default)."""
        wanted = self.eval_users if user_ids is None else user_ids
        rows = self.inputs["users"]
        return rows.filter(pc.is_in(rows.column("user_id"), value_set=wanted))

    def summary(self) -> dict[str, object]:
        return {
            "night": self.night.isoformat(),
            "window_days": self.window_days,
            "eval_users": len(self.eval_users),
            "relevant_pairs": self.truth.num_rows,
            "catalog": self.inputs["items"].num_rows,
        }


def load_night(warehouse: Warehouse, night: dt.date, window_days: int, settings: Settings) -> Night:
    """Query the inputs of ``night - 1`` and the truth of ``[night, night + window_days)``.

    Raises:
        pipelines.serving.inputs.EmptyInputsError: no users or no posts the day before the night.
    """
    served_day = night - dt.timedelta(days=1)
    inputs = query_inputs(warehouse, served_day, settings)
    truth = night_truth(warehouse, night, window_days, settings.candidates.seen_horizon_days or 0)
    served = inputs["users"].column("user_id")
    truth = truth.filter(pc.is_in(truth.column("user_id"), value_set=served))
    users = pc.unique(truth.column("user_id")).sort()
    config = settings.selection
    if len(users) > config.max_eval_users:
        picked = np.random.default_rng([config.seed, night.toordinal()]).choice(
            len(users), size=config.max_eval_users, replace=False
        )
        users = users.take(pa.array(np.sort(picked)))
        truth = truth.filter(pc.is_in(truth.column("user_id"), value_set=users))
    items = inputs["items"]
    fresh = items.filter(pc.less_equal(items.column("item_age_days"), config.fresh_days)).column("item_id")
    result = Night(night, window_days, inputs, truth, users, fresh.combine_chunks())
    log.info("night %s: %s", night, result.summary())
    return result


class Replay:
    """Lists and scores of systems on one night; models come from ``models`` (handed in or exported)."""

    def __init__(self, night: Night, settings: Settings, models: ModelStore) -> None:
        self.night = night
        # Lists are scored down to the largest cut-off, whatever the published top-K is.
        top_k = max(settings.candidates.top_k, max(settings.selection.ks))
        self.settings = settings.with_overrides({"candidates": {"top_k": top_k}})
        self.models = models
        self._vectors: dict[str, np.ndarray] = {}

    def item_vectors(self, two_tower_version: str | None) -> np.ndarray:
        """The two-tower embeddings of the night's catalog (computed once per model); a single zero
        column for a system without a two-tower (an undiversified baseline uses no embeddings)."""
        if two_tower_version is None:
            return no_vectors(self.night.inputs["items"].num_rows)
        if two_tower_version not in self._vectors:
            towers = self.models.get(TWO_TOWER, two_tower_version)
            self._vectors[two_tower_version] = towers.embed_items(self.night.inputs["items"])
        return self._vectors[two_tower_version]

    def context(self, system: ServedSystem) -> ServingContext:
        """The serving context ``system`` would have had the day before the night."""
        items = self.night.inputs["items"]
        vectors = self.item_vectors(system.two_tower_version)
        retriever = make_retriever(
            system,
            self.models,
            items,
            vectors,
            self.night.inputs["interactions"],
            end_of_day(self.night.served_day),
            self.settings.index,
        )
        ranker = self.models.get(RANKER, system.ranker_version) if system.ranker_version else None
        return build_context(items, vectors, retriever, ranker, system)

    def _batch(self, ctx: ServingContext, user_ids: pa.Array | None = None) -> UserBatch:
        users = self.night.users(user_ids)
        seen = self.night.inputs["seen"]
        seen = seen.filter(pc.is_in(seen.column("user_id"), value_set=users.column("user_id")))
        return UserBatch.build(users, seen, ctx)

    def lists(self, system: ServedSystem) -> pa.Table:
        """The lists ``system`` would have published for the evaluated users, checked as published lists are.

        Raises:
            pipelines.serving.checks.ListInvariantError: a list breaks a rule of published lists.
        """
        ctx = self.context(system)
        batch = self._batch(ctx)
        lists = lists_for(ctx, batch, self.settings, StageTimer())
        check_lists(lists, ctx, batch, self.settings.candidates.top_k)
        return lists

    def score(self, lists: pa.Table) -> ListScores:
        """Recall@K, NDCG@K, coverage and fresh share of ``lists`` on this night."""
        return score_lists(
            lists,
            self.night.truth,
            self.night.eval_users,
            self.settings.selection.ks,
            self.night.inputs["items"].num_rows,
            self.night.fresh_items,
        )

    def evaluate(self, system: ServedSystem) -> ListScores:
        """Replay ``system`` and score its lists."""
        return self.score(self.lists(system))

    def ranking_rows(self, system: ServedSystem, eval_share: float = 0.2) -> tuple[pa.Table, np.ndarray]:
        """Training rows for a ranker from this night: every served user's filtered retrieval by ``system``
        (ranker off), labelled 1 when the user engaged with the post in the window.

        Returns:
            Rows in the contract of the ranking dataset (``user_id, item_id, ds, label, split`` and the
            user and post feature columns) and their ``(n, 2)`` retrieval score and rank. Users go to the
            ``eval`` split (early stopping) by a stable hash.
        """
        ctx = self.context(system)
        truth_users = pc.unique(self.night.truth.column("user_id"))
        pairs = retrieved_pairs(ctx, self._batch(ctx, truth_users), self.settings)
        key = pc.binary_join_element_wise(pairs.column("user_id"), pairs.column("item_id"), "\x1f")
        truth = self.night.truth
        relevant = pc.binary_join_element_wise(truth.column("user_id"), truth.column("item_id"), "\x1f")
        label = pc.cast(pc.is_in(key, value_set=relevant), pa.int64())
        users, items = self.night.inputs["users"], self.night.inputs["items"]
        user_row = pc.index_in(pairs.column("user_id"), value_set=users.column("user_id"))
        item_row = pc.index_in(pairs.column("item_id"), value_set=items.column("item_id"))
        in_eval = crc32_of(pairs.column("user_id")) % 1000 < eval_share * 1000
        rows = users.take(user_row).drop_columns(["user_id"])
        for name in items.column_names:
            if name not in ("item_id", *rows.column_names):
                rows = rows.append_column(name, items.column(name).take(item_row))
        rows = rows.append_column("user_id", pairs.column("user_id"))
        rows = rows.append_column("item_id", pairs.column("item_id"))
        rows = rows.append_column("ds", pa.array([self.night.served_day] * pairs.num_rows, pa.date32()))
        rows = rows.append_column("label", label)
        rows = rows.append_column("split", pa.array(np.where(in_eval, "eval", "train")))
        scores = np.column_stack(
            [
                pairs.column("retrieval_score").to_numpy(),
                pairs.column("retrieval_rank").to_numpy(),
            ]
        )
        return rows, scores
