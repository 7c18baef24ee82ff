"""The selection's blend step on hand-built validation scores: the two-tower alone stays unless a blend
with another family's retriever makes the lists better beyond noise; a blend keeps its partner's setting
and is offered no impressions ranker."""

from __future__ import annotations

import numpy as np

from pipelines.core.model_settings import (
    ALS_RETRIEVER,
    IMPRESSIONS_RANKER,
    NO_RANKER,
    POPULAR_RETRIEVER,
    RETRIEVAL_RANKER,
    TWO_TOWER_RETRIEVER,
)
from pipelines.core.settings import Settings
from pipelines.evaluation.recipes import Recipe, retriever_recipes
from pipelines.evaluation.selection import _choose_blend, _Protocol, _ranker_options
from tests.pipelines.evaluation.hand_scores import by_luck, helped, protocol_with_scores, random_recall

BEST = Recipe(TWO_TOWER_RETRIEVER, (("logq_correction", True),), popularity_prior=1.0)
PARTNERS = [Recipe(ALS_RETRIEVER, als_factors=16), Recipe(POPULAR_RETRIEVER, popularity_window_days=7)]
WEIGHTS = [0.25, 0.5]


def _protocol(recall: dict[Recipe, list[np.ndarray]]) -> _Protocol:
    return protocol_with_scores(recall, blend_weights=WEIGHTS)


def _blends() -> list[Recipe]:
    return [BEST.blended_with(partner, w) for partner in PARTNERS for w in WEIGHTS]


def test_the_two_tower_alone_stays_when_no_blend_helps_beyond_noise() -> None:
    base = random_recall(1)
    rng = np.random.default_rng(2)
    recall = {BEST: base}
    for blend in _blends():
        recall[blend] = by_luck(base, rng)
    protocol = _protocol(recall)
    assert _choose_blend(protocol, BEST, PARTNERS) == BEST
    trial = protocol.trials[-1]
    assert trial["step"] == "two_tower: blend" and trial["chosen"] == BEST.name
    assert len(trial["options"]) == 1 + len(PARTNERS) * len(WEIGHTS)
    assert trial["gain_over_incumbent"]["low"] <= 0


def test_a_blend_that_helps_beyond_noise_is_chosen_with_its_partners_setting() -> None:
    base = random_recall(3)
    rng = np.random.default_rng(4)
    winner = BEST.blended_with(PARTNERS[1], 0.5)
    protocol = _protocol({BEST: base, **{b: base for b in _blends()}, winner: helped(base, rng)})
    chosen = _choose_blend(protocol, BEST, PARTNERS)
    assert chosen == winner and chosen.popularity_window_days == 7 and chosen.popularity_prior == 1.0
    assert chosen.name.endswith("+ blend most popular 7d (0.5)") and chosen.without_blend == BEST
    assert protocol.trials[-1]["gain_over_incumbent"]["low"] > 0
    assert "blend_family" not in BEST.to_json() and chosen.to_json()["blend_family"] == POPULAR_RETRIEVER
    assert Recipe.from_json(chosen.to_json()) == chosen and Recipe.from_json(BEST.to_json()) == BEST


def test_a_blend_is_offered_no_impressions_ranker() -> None:
    sources = [NO_RANKER, IMPRESSIONS_RANKER, RETRIEVAL_RANKER]
    assert [r.ranker for r in _ranker_options(sources, BEST)] == sources
    blended = _ranker_options(sources, BEST.blended_with(PARTNERS[0], 0.25))
    assert [r.ranker for r in blended] == [NO_RANKER, RETRIEVAL_RANKER]
    assert all(r.blend_family == ALS_RETRIEVER for r in blended)


def test_every_als_setting_is_a_candidate_and_a_blend_keeps_its_partners_regularisation() -> None:
    settings = Settings.model_validate(
        {
            "selection": {
                "retrievers": [ALS_RETRIEVER],
                "als_factors": [16, 64],
                "als_regularizations": [0.05, 2],
            }
        }
    )
    recipes = retriever_recipes(settings)
    assert [r.name for r in recipes] == ["ALS f=16", "ALS f=16 reg=2", "ALS f=64", "ALS f=64 reg=2"]
    blend = BEST.blended_with(recipes[3], 0.5)
    assert (blend.als_factors, blend.als_regularization) == (64, 2.0)
    assert blend.name.endswith("+ blend ALS f=64 reg=2 (0.5)") and blend.without_blend == BEST
    assert Recipe.from_json(blend.to_json()) == blend
