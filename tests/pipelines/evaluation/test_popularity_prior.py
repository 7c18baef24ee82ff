"""The selection's popularity prior step on hand-built validation scores: the weight 0 stays unless
another weight makes the lists better beyond noise."""

from __future__ import annotations

import datetime as dt

import numpy as np

from pipelines.core.model_settings import TWO_TOWER_RETRIEVER
from pipelines.core.settings import Settings
from pipelines.evaluation.nights import NightPlan
from pipelines.evaluation.recipes import Recipe
from pipelines.evaluation.scoring import ListScores
from pipelines.evaluation.selection import _choose_popularity_prior, _Protocol

NIGHTS = (dt.date(2026, 11, 1), dt.date(2026, 11, 8))
USERS = 400
BEST = Recipe(TWO_TOWER_RETRIEVER, (("logq_correction", True),))


def _protocol(recall_by_prior: dict[float, list[np.ndarray]]) -> _Protocol:
    """A selection whose replays of ``BEST`` with each prior weight scored ``recall_by_prior`` (per night,
    per user), as if replayed: only the scores are given, the choice is the selection's own."""
    protocol = object.__new__(_Protocol)
    protocol.settings = Settings()
    protocol.config = protocol.settings.selection.model_copy(update={"popularity_priors": [0.0, 0.5, 1.0]})
    protocol.plan = NightPlan(NIGHTS, dt.date(2026, 11, 15), 7)
    protocol.trials = []
    users = np.array([f"u{i}" for i in range(USERS)], dtype=object)
    protocol._scores = {
        (night, Recipe(TWO_TOWER_RETRIEVER, BEST.variant, popularity_prior=weight)): ListScores(
            users, {"recall_at_50": values[n]}, {}, {}
        )
        for weight, values in recall_by_prior.items()
        for n, night in enumerate(NIGHTS)
    }
    return protocol


def _base(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random(USERS) < 0.3).astype(float) for _ in NIGHTS]


def test_zero_stays_when_no_weight_helps_beyond_noise() -> None:
    base = _base(1)
    rng = np.random.default_rng(2)
    # Each weight moves a few users up and as many down: a higher mean by luck, not beyond noise.
    noisy = {}
    for weight in (0.5, 1.0):
        flipped = [b.copy() for b in base]
        for values in flipped:
            up = rng.choice(np.flatnonzero(values == 0), 12, replace=False)
            down = rng.choice(np.flatnonzero(values == 1), 10, replace=False)
            values[up], values[down] = 1.0, 0.0
        noisy[weight] = flipped
    protocol = _protocol({0.0: base, **noisy})
    chosen = _choose_popularity_prior(protocol, BEST)
    assert chosen.popularity_prior == 0.0
    trial = protocol.trials[-1]
    assert trial["step"] == "two_tower: popularity prior" and trial["incumbent"] == chosen.name
    assert trial["options"][trial["gain_over_incumbent"]["option"]]["recall_at_50"] > np.mean(base)
    assert trial["gain_over_incumbent"]["low"] <= 0


def test_a_weight_that_helps_beyond_noise_is_chosen_and_served() -> None:
    base = _base(3)
    rng = np.random.default_rng(4)
    helped = [b.copy() for b in base]
    for values in helped:  # one user in ten more finds something, nobody loses
        values[rng.choice(np.flatnonzero(values == 0), USERS // 10, replace=False)] = 1.0
    protocol = _protocol({0.0: base, 0.5: base, 1.0: helped})
    chosen = _choose_popularity_prior(protocol, BEST)
    assert chosen.popularity_prior == 1.0 and chosen.variant == BEST.variant
    assert "popularity prior 1" in chosen.name
    assert protocol.trials[-1]["gain_over_incumbent"]["low"] > 0
