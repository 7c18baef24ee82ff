"""A selection protocol that knows only hand-built validation scores, for the tests of one selection step:
the choice is the selection's own, the replays are given."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from pipelines.core.settings import Settings
from pipelines.evaluation.nights import NightPlan
from pipelines.evaluation.recipes import Recipe
from pipelines.evaluation.scoring import ListScores
from pipelines.evaluation.selection import _Protocol

NIGHTS = (dt.date(2026, 11, 1), dt.date(2026, 11, 8))
USERS = 400


def protocol_with_scores(recall: dict[Recipe, list[np.ndarray]], **selection: Any) -> _Protocol:
    """A selection (``selection`` overriding its settings) whose replay of each recipe of ``recall`` scored
    its Recall@50 values: per night of ``NIGHTS``, per user."""
    protocol = object.__new__(_Protocol)
    protocol.settings = Settings()
    protocol.config = protocol.settings.selection.model_copy(update=selection)
    protocol.plan = NightPlan(NIGHTS, dt.date(2026, 11, 15), 7)
    protocol.trials = []
    users = np.array([f"u{i}" for i in range(USERS)], dtype=object)
    protocol._scores = {
        (night, recipe): ListScores(users, {"recall_at_50": values[n]}, {}, {})
        for recipe, values in recall.items()
        for n, night in enumerate(NIGHTS)
    }
    return protocol


def random_recall(seed: int) -> list[np.ndarray]:
    """Per night, each user's 0/1 recall, 1 for three users in ten."""
    rng = np.random.default_rng(seed)
    return [(rng.random(USERS) < 0.3).astype(float) for _ in NIGHTS]


def by_luck(base: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """``base`` with 12 users moved up and 10 down per night: a higher mean by luck, not beyond noise."""
    moved = [b.copy() for b in base]
    for values in moved:
        up = rng.choice(np.flatnonzero(values == 0), 12, replace=False)
        down = rng.choice(np.flatnonzero(values == 1), 10, replace=False)
        values[up], values[down] = 1.0, 0.0
    return moved


def helped(base: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """``base`` where one user in ten more finds something and nobody loses: better beyond noise."""
    better = [b.copy() for b in base]
    for values in better:
        values[rng.choice(np.flatnonzero(values == 0), USERS // 10, replace=False)] = 1.0
    return better
