"""The gate: on the test night, the chosen candidate must not lose to the best tuned baseline, and
whatever would be promoted must not lose to the champion, judged on paired bootstrap intervals.

A challenger *loses* to another system on a gate metric when, over the same users, the mean of
(challenger - other) is below ``-selection.tolerance`` or the whole 95% interval is below zero. A
candidate that loses to the best baseline is replaced by that baseline (serving a baseline is the safety
net, and the decision says so); a challenger that loses to the champion is not promoted. Noise alone
(an interval that straddles zero around a small difference) never swaps a system.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.core.model_settings import TWO_TOWER_RETRIEVER, SelectionConfig
from pipelines.evaluation.scoring import ListScores
from pipelines.serving.system import ServedSystem

CANDIDATE = "candidate"
BASELINE = "baseline"
MODEL = "model"
STAGE = "stage"
CHAMPION = "champion"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A system replayed on the test night and its role: the ``candidate`` chosen on the validation
    nights, a family's best (``baseline`` or the two-tower ``model``), a ``stage`` variant of the
    candidate (for the report), or the ``champion``."""

    name: str
    family: str
    system: ServedSystem
    role: str
    recipe: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """What the gate decided: ``served`` names the candidate in force after this run."""

    promoted: bool
    served: str
    system: ServedSystem | None
    reason: str
    checks: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "served": self.served,
            "system": self.system.to_json() if self.system else None,
            "reason": self.reason,
            "checks": self.checks,
        }


def _check(
    scores: dict[str, ListScores], challenger: str, other: str, config: SelectionConfig
) -> tuple[bool, list[dict[str, Any]]]:
    differences = scores[challenger].difference(scores[other], seed=config.seed)
    checks = []
    for metric in config.gate_metrics:
        interval = differences[metric]
        checks.append(
            {
                "challenger": challenger,
                "against": other,
                "metric": metric,
                **interval.to_json(),
                "passed": not (interval.mean < -config.tolerance or interval.high < 0),
            }
        )
    return all(c["passed"] for c in checks), checks


def decide(
    candidates: dict[str, Candidate], scores: dict[str, ListScores], chosen: str, config: SelectionConfig
) -> GateDecision:
    """Gate ``chosen`` against the best baseline and the champion on the test night's scores."""
    metric = config.metric
    others = [n for n, c in candidates.items() if c.role == BASELINE and n != chosen]
    best_baseline = max(others, key=lambda n: scores[n].means()[metric]) if others else None
    checks: list[dict[str, Any]] = []
    challenger, reasons = chosen, []
    if best_baseline is not None:
        passed, found = _check(scores, chosen, best_baseline, config)
        checks += found
        if passed:
            reasons.append(f"{chosen} does not lose to the best baseline, {best_baseline}")
        else:
            challenger = best_baseline
            reasons.append(
                f"{chosen} lost to the best baseline {best_baseline} on the test night; serving the baseline"
            )
    champion = next((n for n, c in candidates.items() if c.role == CHAMPION), None)
    if champion is not None and candidates[champion].system != candidates[challenger].system:
        passed, found = _check(scores, challenger, champion, config)
        checks += found
        if not passed:
            reasons.append(f"{challenger} lost to the champion; the champion stays")
            return GateDecision(False, champion, candidates[champion].system, "; ".join(reasons), checks)
        reasons.append(f"{challenger} does not lose to the champion")
    elif champion is not None:
        reasons.append("the champion is the same system")
        return GateDecision(False, champion, candidates[champion].system, "; ".join(reasons), checks)
    else:
        reasons.append("no champion yet")
    kind = "a model" if candidates[challenger].family == TWO_TOWER_RETRIEVER else "a baseline"
    reasons.append(f"promoted {kind}")
    return GateDecision(True, challenger, candidates[challenger].system, "; ".join(reasons), checks)
