"""The facts of a selection: a hand-built selection of three systems scored on the same four users."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from pipelines.core.model_settings import IMPRESSIONS_RANKER, NO_RANKER
from pipelines.evaluation.gate import BASELINE, CANDIDATE, STAGE, Candidate, GateDecision
from pipelines.evaluation.nights import NightPlan
from pipelines.evaluation.recipes import Recipe
from pipelines.evaluation.scoring import ListScores
from pipelines.evaluation.selection import Selection, selection_facts
from pipelines.serving.system import ServedSystem

USERS = np.array(["u1", "u2", "u3", "u4"], dtype=object)


def scores(recall: list[float]) -> ListScores:
    return ListScores(USERS, {"recall_at_50": np.array(recall)}, {"coverage_at_50": 0.5}, {})


def test_facts_record_the_metric_and_what_each_stage_adds() -> None:
    chosen = Recipe("two_tower", ranker=IMPRESSIONS_RANKER)
    without_ranker = dataclasses.replace(chosen, ranker=NO_RANKER)
    popular = Recipe("most_popular", popularity_window_days=1)
    systems = {
        chosen.name: Candidate(
            chosen.name, "two_tower", ServedSystem("two_tower", "tt", ranker_version="rk"), CANDIDATE
        ),
        without_ranker.name: Candidate(
            without_ranker.name, "two_tower", ServedSystem("two_tower", "tt"), STAGE
        ),
        popular.name: Candidate(popular.name, "most_popular", ServedSystem("most_popular", "tt"), BASELINE),
    }
    test = {
        chosen.name: scores([1.0, 0.5, 0.0, 0.5]),
        without_ranker.name: scores([1.0, 1.0, 0.5, 0.5]),
        popular.name: scores([0.0, 0.5, 0.0, 0.5]),
    }
    decision = GateDecision(True, chosen.name, systems[chosen.name].system, "promoted a model", [])
    selection = Selection(
        metric="recall_at_50",
        plan=NightPlan((dt.date(2026, 11, 21),), dt.date(2026, 11, 22), 1),
        nights=[],
        trials=[],
        chosen=chosen,
        test=test,
        candidates=systems,
        decision=decision,
        exports=[],
        seconds={"total": 1.0},
    )

    facts = selection_facts(selection, seed=3)

    assert facts["metric"] == "recall_at_50"
    # Only the stage variant is weighed against the candidate: mean(candidate - without ranker) over
    # the same users is (0 - 0.5 - 0.5 + 0) / 4.
    assert list(facts["stage_differences"]) == [without_ranker.name]
    stage = facts["stage_differences"][without_ranker.name]["recall_at_50"]
    assert stage["mean"] == pytest.approx(-0.25)
    assert stage["low"] <= stage["mean"] <= stage["high"]
    # The served system is the candidate, so its difference from the stage variant is the same interval.
    assert facts["differences_from_served"][without_ranker.name]["recall_at_50"] == stage
