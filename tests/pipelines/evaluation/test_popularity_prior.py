"""The selection's popularity prior step on hand-built validation scores: the weight 0 stays unless
another weight makes the lists better beyond noise."""

from __future__ import annotations

import numpy as np

from pipelines.core.model_settings import TWO_TOWER_RETRIEVER
from pipelines.evaluation.recipes import Recipe
from pipelines.evaluation.selection import _choose_popularity_prior, _Protocol
from tests.pipelines.evaluation.hand_scores import by_luck, helped, protocol_with_scores, random_recall

BEST = Recipe(TWO_TOWER_RETRIEVER, (("logq_correction", True),))


def _protocol(recall_by_prior: dict[float, list[np.ndarray]]) -> _Protocol:
    recall = {
        Recipe(TWO_TOWER_RETRIEVER, BEST.variant, popularity_prior=w): v for w, v in recall_by_prior.items()
    }
    return protocol_with_scores(recall, popularity_priors=[0.0, 0.5, 1.0])


def test_zero_stays_when_no_weight_helps_beyond_noise() -> None:
    base = random_recall(1)
    rng = np.random.default_rng(2)
    # Each weight moves a few users up and as many down: a higher mean by luck, not beyond noise.
    noisy = {weight: by_luck(base, rng) for weight in (0.5, 1.0)}
    protocol = _protocol({0.0: base, **noisy})
    chosen = _choose_popularity_prior(protocol, BEST)
    assert chosen.popularity_prior == 0.0
    trial = protocol.trials[-1]
    assert trial["step"] == "two_tower: popularity prior" and trial["incumbent"] == chosen.name
    assert trial["options"][trial["gain_over_incumbent"]["option"]]["recall_at_50"] > np.mean(base)
    assert trial["gain_over_incumbent"]["low"] <= 0


def test_a_weight_that_helps_beyond_noise_is_chosen_and_served() -> None:
    base = random_recall(3)
    rng = np.random.default_rng(4)
    protocol = _protocol({0.0: base, 0.5: base, 1.0: helped(base, rng)})
    chosen = _choose_popularity_prior(protocol, BEST)
    assert chosen.popularity_prior == 1.0 and chosen.variant == BEST.variant
    assert "popularity prior 1" in chosen.name
    assert protocol.trials[-1]["gain_over_incumbent"]["low"] > 0
