"""The gate on constructed test-night scores: a candidate that loses to the best baseline is replaced by
it, noise never swaps a system, a challenger that loses to the champion is not promoted."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.model_settings import SelectionConfig
from pipelines.evaluation.gate import BASELINE, CANDIDATE, CHAMPION, MODEL, Candidate, decide
from pipelines.evaluation.scoring import ListScores
from pipelines.serving.system import ServedSystem

CONFIG = SelectionConfig(resamples=500)
N = 400
RNG = np.random.default_rng(0)
BASE = 0.3 + 0.4 * RNG.random(N)  # per-user scores the systems are built around: differences are paired


def scores(shift: float, noise: float = 0.0, seed: int = 1) -> ListScores:
    """Per-user recall and ndcg of ``BASE + shift``, plus per-user noise of +-``noise`` (mean zero)."""
    signs = np.random.default_rng(seed).permutation(np.repeat([1.0, -1.0], N // 2))
    values = BASE + shift + noise * signs
    per_user = {f"{m}_at_{k}": values for m in ("recall", "ndcg") for k in CONFIG.ks}
    return ListScores(np.arange(N).astype(str), per_user, {}, {})


TWO_TOWER = ServedSystem("two_tower", "tt-1", ranker_version="rk-1")
POPULAR = ServedSystem("most_popular", None, diversify=False, popularity_window_days=7)
ALS = ServedSystem("als", None, als_version="als-1", diversify=False)
OLD = ServedSystem("two_tower", "tt-0")


def candidates(champion: ServedSystem | None = None) -> dict[str, Candidate]:
    found = {
        "two-tower + ranker": Candidate("two-tower + ranker", "two_tower", TWO_TOWER, CANDIDATE),
        "most popular 7d": Candidate("most popular 7d", "most_popular", POPULAR, BASELINE),
        "ALS f=16": Candidate("ALS f=16", "als", ALS, BASELINE),
    }
    if champion is not None:
        found["champion"] = Candidate("champion", champion.retriever, champion, CHAMPION)
    return found


def test_a_candidate_that_beats_the_baselines_is_promoted_first() -> None:
    decision = decide(
        candidates(),
        {"two-tower + ranker": scores(0.1), "most popular 7d": scores(0.0), "ALS f=16": scores(-0.05)},
        "two-tower + ranker",
        CONFIG,
    )
    assert decision.promoted and decision.served == "two-tower + ranker" and decision.system == TWO_TOWER
    # judged against the best baseline only, on every gate metric
    assert {(c["against"], c["metric"]) for c in decision.checks} == {
        ("most popular 7d", "recall_at_50"),
        ("most popular 7d", "ndcg_at_10"),
    }
    assert all(c["passed"] for c in decision.checks)
    assert "no champion yet" in decision.reason and "promoted a model" in decision.reason


def test_a_candidate_that_loses_to_the_best_baseline_is_replaced_by_it() -> None:
    decision = decide(
        candidates(),
        {"two-tower + ranker": scores(-0.08), "most popular 7d": scores(0.0), "ALS f=16": scores(0.02)},
        "two-tower + ranker",
        CONFIG,
    )
    assert decision.promoted and decision.served == "ALS f=16" and decision.system == ALS
    failed = [c for c in decision.checks if not c["passed"]]
    assert failed and all(c["against"] == "ALS f=16" and c["high"] < 0 for c in failed)
    assert (
        "lost to the best baseline ALS f=16" in decision.reason and "promoted a baseline" in decision.reason
    )


def test_noise_around_a_small_difference_does_not_swap_the_system() -> None:
    # 0.005 below the baseline on average, with per-user noise: the interval straddles zero.
    decision = decide(
        candidates(),
        {
            "two-tower + ranker": scores(-0.005, noise=0.2),
            "most popular 7d": scores(0.0),
            "ALS f=16": scores(-0.1),
        },
        "two-tower + ranker",
        CONFIG,
    )
    check = decision.checks[0]
    assert check["low"] < 0 < check["high"] and check["passed"]
    assert decision.served == "two-tower + ranker"


def test_a_clear_loss_smaller_than_the_noise_of_users_still_counts() -> None:
    # Every user a little worse: the whole interval is below zero even though the mean is within tolerance.
    decision = decide(
        candidates(),
        {"two-tower + ranker": scores(-0.005), "most popular 7d": scores(0.0), "ALS f=16": scores(-0.1)},
        "two-tower + ranker",
        CONFIG,
    )
    assert decision.served == "most popular 7d"


def test_a_challenger_that_loses_to_the_champion_is_not_promoted() -> None:
    decision = decide(
        candidates(champion=OLD),
        {
            "two-tower + ranker": scores(0.0),
            "most popular 7d": scores(-0.1),
            "ALS f=16": scores(-0.1),
            "champion": scores(0.1),
        },
        "two-tower + ranker",
        CONFIG,
    )
    assert not decision.promoted and decision.served == "champion" and decision.system == OLD
    assert "lost to the champion; the champion stays" in decision.reason
    assert any(c["against"] == "champion" and not c["passed"] for c in decision.checks)


def test_the_same_system_as_the_champion_is_not_promoted_again() -> None:
    decision = decide(
        candidates(champion=TWO_TOWER),
        {
            "two-tower + ranker": scores(0.0),
            "most popular 7d": scores(-0.1),
            "ALS f=16": scores(-0.1),
            "champion": scores(0.0),
        },
        "two-tower + ranker",
        CONFIG,
    )
    assert not decision.promoted and decision.system == TWO_TOWER
    assert "the champion is the same system" in decision.reason


@pytest.mark.parametrize("role", [MODEL, BASELINE])
def test_without_other_baselines_only_the_champion_is_checked(role: str) -> None:
    only = {"two-tower + ranker": Candidate("two-tower + ranker", "two_tower", TWO_TOWER, role)}
    decision = decide(only, {"two-tower + ranker": scores(0.0)}, "two-tower + ranker", CONFIG)
    assert decision.promoted and decision.checks == []
