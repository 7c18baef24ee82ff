"""Recipes: how to build a candidate system for any night (which models to train on the data before it,
which list stages to use), so the same candidate can be replayed night after night and then served."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.model_settings import (
    ALS_RETRIEVER,
    IMPRESSIONS_RANKER,
    KNN_RETRIEVER,
    NO_RANKER,
    POPULAR_RETRIEVER,
    RETRIEVAL_RANKER,
    TWO_TOWER_RETRIEVER,
)
from pipelines.core.settings import Settings
from pipelines.evaluation.night_models import NightModels, Trained
from pipelines.evaluation.replay import Replay
from pipelines.serving.system import ServedSystem
from pipelines.training.als import AlsParams

# The settings of the baseline retrievers, which a blend takes from its partner.
_BASELINE_SETTINGS = ("popularity_window_days", "knn_neighbors", "als_factors", "als_regularization")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A candidate system, independent of the night.

    Attributes:
        family: the retriever (``two_tower``, ``most_popular``, ``item_knn``, ``als``).
        variant: the two-tower settings overrides, as sorted ``(name, value)`` pairs.
        popularity_window_days: for most popular (None: all history).
        knn_neighbors: for item-kNN.
        als_factors: for ALS.
        als_regularization: for ALS, its L2 regularisation.
        ranker: ``none``, ``impressions`` (logged feed) or ``retrieval`` (the earlier nights' retrieved
            posts labelled by what users did next); two-tower only.
        max_item_age_days: the age limit (None: none).
        diversify: MMR, caps and the exploration slot.
        mmr_lambda: diversification's relevance weight (None: the settings').
        retrieval_depth: posts retrieved per user for the ranker (None: the settings').
        popularity_prior: ``beta`` of the two-tower's retrieval score (see ``ServedSystem``); two-tower
            only, a serving choice that needs no retraining.
        blend_family: another family whose retrieval is fused with the two-tower's (its setting is this
            recipe's ``popularity_window_days``, ``knn_neighbors`` or ``als_factors`` and
            ``als_regularization``); None: no blend.
        blend_weight: that family's weight in the blend (``ServedSystem.blend_weight``).
    """

    family: str
    variant: tuple[tuple[str, Any], ...] = ()
    popularity_window_days: int | None = None
    knn_neighbors: int = 100
    als_factors: int = 32
    als_regularization: float = AlsParams.regularization
    ranker: str = NO_RANKER
    max_item_age_days: float | None = None
    diversify: bool = False
    mmr_lambda: float | None = None
    retrieval_depth: int | None = None
    popularity_prior: float = 0.0
    blend_family: str | None = None
    blend_weight: float = 0.0

    @property
    def name(self) -> str:
        base = self._retriever_name(self.family)
        stages = []
        if self.popularity_prior:
            stages.append(f"popularity prior {self.popularity_prior:g}")
        if self.blend_family is not None:
            stages.append(f"blend {self._retriever_name(self.blend_family)} ({self.blend_weight:g})")
        if self.ranker != NO_RANKER:
            stages.append(f"ranker ({self.ranker})")
        if self.retrieval_depth is not None:
            stages.append(f"depth {self.retrieval_depth}")
        if self.max_item_age_days is not None:
            stages.append(f"age<={self.max_item_age_days:g}d")
        if self.diversify:
            stages.append(
                "diversified" + ("" if self.mmr_lambda is None else f" (lambda {self.mmr_lambda:g})")
            )
        return " + ".join([base, *stages])

    def _retriever_name(self, family: str) -> str:
        if family == TWO_TOWER_RETRIEVER:
            return "two-tower" + (
                "" if not self.variant else " " + ",".join(f"{k}={v}" for k, v in self.variant)
            )
        if family == POPULAR_RETRIEVER:
            window = "all" if self.popularity_window_days is None else f"{self.popularity_window_days}d"
            return f"most popular {window}"
        if family == KNN_RETRIEVER:
            return f"item-kNN k={self.knn_neighbors}"
        regularized = self.als_regularization != AlsParams.regularization
        return f"ALS f={self.als_factors}" + (f" reg={self.als_regularization:g}" if regularized else "")

    def blended_with(self, other: Recipe, weight: float) -> Recipe:
        """This recipe's retrieval fused with ``other``'s retriever (another family's), at ``weight``."""
        return self._retriever_settings_of(other, blend_family=other.family, blend_weight=weight)

    @property
    def without_blend(self) -> Recipe:
        """The same recipe retrieving with its own family alone (and that family's default settings)."""
        return self._retriever_settings_of(Recipe(self.family), blend_family=None, blend_weight=0.0)

    def _retriever_settings_of(self, other: Recipe, **changes: Any) -> Recipe:
        """This recipe with ``other``'s baseline retriever settings, and ``changes``."""
        settings = {name: getattr(other, name) for name in _BASELINE_SETTINGS}
        return dataclasses.replace(self, **settings, **changes)

    @property
    def retrieval_only(self) -> Recipe:
        """The same retriever without any list stage (what a retrieval-trained ranker learns from)."""
        return dataclasses.replace(
            self,
            ranker=NO_RANKER,
            max_item_age_days=None,
            diversify=False,
            mmr_lambda=None,
            retrieval_depth=None,
        )

    def to_json(self) -> dict[str, Any]:
        """The fields and the name; a recipe without a blend leaves the blend's fields out."""
        data = {**dataclasses.asdict(self), "variant": dict(self.variant), "name": self.name}
        if self.blend_family is None:
            del data["blend_family"], data["blend_weight"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recipe:
        """The recipe of :meth:`to_json`."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["variant"] = tuple(sorted(data.get("variant", {}).items()))
        return cls(**values)

    def with_two_tower_setting(self, settings: Settings, name: str, value: Any) -> Recipe:
        """This two-tower recipe with ``two_tower.<name>`` set to ``value``; an override equal to the
        settings' own value is left out, so the same model is never trained twice under two names."""
        variant = {k: v for k, v in self.variant if k != name}
        if getattr(settings.two_tower, name) != value:
            variant[name] = value
        return dataclasses.replace(self, variant=tuple(sorted(variant.items())))


def retriever_recipes(settings: Settings) -> list[Recipe]:
    """Every retriever candidate (no stages) of the families in ``selection.retrievers``, in that order; the
    two-tower's settings are searched from the one of the settings (``selection.two_tower_search``)."""
    config = settings.selection
    by_family = {
        TWO_TOWER_RETRIEVER: [Recipe(TWO_TOWER_RETRIEVER)],
        POPULAR_RETRIEVER: [
            Recipe(POPULAR_RETRIEVER, popularity_window_days=w) for w in config.popularity_windows
        ],
        KNN_RETRIEVER: [Recipe(KNN_RETRIEVER, knn_neighbors=k) for k in config.knn_neighbors],
        ALS_RETRIEVER: [
            Recipe(ALS_RETRIEVER, als_factors=f, als_regularization=r)
            for f in config.als_factors
            for r in config.als_regularizations
        ],
    }
    return [recipe for family in config.retrievers for recipe in by_family[family]]


class Kitchen:
    """Builds recipes into systems night by night, training each model once.

    ``nights`` are the replayed nights in order; a retrieval-trained ranker for a night learns from every
    night before it in that order (their retrieved posts, labelled by what users did after each).
    """

    def __init__(self, models: NightModels, replays: dict[dt.date, Replay], nights: list[dt.date]) -> None:
        self.models, self.replays, self.nights = models, replays, nights
        self._two_tower: dict[tuple[dt.date, tuple], Trained | None] = {}
        self._als: dict[tuple[dt.date, int, float], Trained | None] = {}
        self._ranker: dict[tuple[dt.date, Recipe], Trained | None] = {}
        self._rows: dict[tuple[dt.date, Recipe], tuple[pa.Table, np.ndarray] | None] = {}
        self._vectors: dict[dt.date, str | None] = {}

    def two_tower(self, night: dt.date, variant: tuple[tuple[str, Any], ...]) -> Trained | None:
        key = (night, variant)
        if key not in self._two_tower:
            self._two_tower[key] = self.models.two_tower(night, dict(variant))
        return self._two_tower[key]

    def vectors(self, night: dt.date) -> str | None:
        """The two-tower of the settings for ``night``, whose embeddings diversify baseline lists (trained
        on demand); None when it cannot be trained."""
        trained = self.two_tower(night, ())
        return trained.version if trained is not None else None

    def _ranker_for(self, night: dt.date, recipe: Recipe, two_tower_version: str) -> Trained | None:
        key = (night, dataclasses.replace(recipe.retrieval_only, ranker=recipe.ranker))
        if key in self._ranker:
            return self._ranker[key]
        trained = None
        if recipe.ranker == IMPRESSIONS_RANKER:
            trained = self.models.ranker_from_impressions(night, two_tower_version, recipe.popularity_prior)
        elif recipe.ranker == RETRIEVAL_RANKER:
            earlier = [
                rows
                for day in self.nights[: self.nights.index(night)]
                if (rows := self._ranking_rows(day, recipe.retrieval_only)) is not None
            ]
            if earlier:
                trained = self.models.ranker_from_replay(
                    night - dt.timedelta(days=1),
                    pa.concat_tables([rows for rows, _ in earlier]),
                    np.concatenate([scores for _, scores in earlier]),
                )
        self._ranker[key] = trained
        return trained

    def _ranking_rows(self, night: dt.date, recipe: Recipe) -> tuple[pa.Table, np.ndarray] | None:
        """The ranker training rows of ``night``'s replay of ``recipe`` (``Replay.ranking_rows``), computed
        once; None when the recipe cannot be built for that night."""
        key = (night, recipe)
        if key not in self._rows:
            system = self.system(night, recipe)
            self._rows[key] = None if system is None else self.replays[night].ranking_rows(system)
        return self._rows[key]

    def system(self, night: dt.date, recipe: Recipe) -> ServedSystem | None:
        """The system ``recipe`` makes for ``night``; None when a model it needs cannot be trained."""
        stages = {
            "max_item_age_days": recipe.max_item_age_days,
            "diversify": recipe.diversify,
            "mmr_lambda": recipe.mmr_lambda,
            "retrieval_depth": recipe.retrieval_depth,
        }
        if recipe.family == TWO_TOWER_RETRIEVER:
            trained = self.two_tower(night, recipe.variant)
            if trained is None:
                return None
            ranker_version = None
            if recipe.ranker != NO_RANKER:
                ranker = self._ranker_for(night, recipe, trained.version)
                if ranker is None:
                    return None
                ranker_version = ranker.version
            blend: dict[str, Any] = {}
            if recipe.blend_family is not None:
                partner = self._retriever_fields(night, recipe, recipe.blend_family)
                if partner is None:
                    return None
                blend = {
                    **partner,
                    "blend_retriever": recipe.blend_family,
                    "blend_weight": recipe.blend_weight,
                }
            return ServedSystem(
                TWO_TOWER_RETRIEVER,
                trained.version,
                ranker_version=ranker_version,
                popularity_prior=recipe.popularity_prior,
                **blend,
                **stages,
            )
        vectors = self.vectors(night)
        if recipe.diversify and vectors is None:
            return None
        fields = self._retriever_fields(night, recipe, recipe.family)
        if fields is None:
            return None
        return ServedSystem(recipe.family, vectors, **fields, **stages)

    def _retriever_fields(self, night: dt.date, recipe: Recipe, family: str) -> dict[str, Any] | None:
        """The ``ServedSystem`` fields of a baseline ``family``'s retriever with ``recipe``'s setting (the
        ALS model trained for ``night``); None when ALS cannot be trained."""
        if family == POPULAR_RETRIEVER:
            return {"popularity_window_days": recipe.popularity_window_days}
        if family == KNN_RETRIEVER:
            return {"knn_neighbors": recipe.knn_neighbors}
        key = (night, recipe.als_factors, recipe.als_regularization)
        if key not in self._als:
            interactions = self.replays[night].night.inputs["interactions"]
            self._als[key] = self.models.als(night, interactions, *key[1:])
        if self._als[key] is None:
            return None
        return {"als_version": self._als[key].version}
