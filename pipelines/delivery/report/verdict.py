"""The run report's sentences about a training run: what the gate decided and why, and whether each list
stage earned its place, in words a reader takes in at a glance (numbers from ``report.selection``).
"""

from __future__ import annotations

from typing import Any

from pipelines.evaluation.gate import CHAMPION


def metric_label(metric: str) -> str:
    """``recall_at_50`` as ``recall@50``."""
    return metric.replace("_at_", "@")


def interval_words(interval: dict[str, Any]) -> str:
    """A difference and its 95% interval: ``-0.040 [-0.070, -0.010]``."""
    return f"{interval['mean']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def verdict(decision: dict[str, Any], rows: list[dict[str, Any]], chosen: str) -> str:
    """One sentence: promoted or kept, which system, and the gate check that decided it.

    Args:
        decision: the gate's decision, as read by ``report.selection``.
        rows: the test night's systems (``name``, ``role``, ``label``).
        chosen: the name of the candidate chosen on the validation nights.

    Raises:
        KeyError: a check names a system that is not on the test night.
    """
    labels = {row["name"]: row["label"] for row in rows}
    roles = {row["name"]: row["role"] for row in rows}

    def who(name: str) -> str:
        return "the champion" if roles[name] == CHAMPION else labels[name]

    checks = decision["checks"]
    losses = [
        f"{who(c['challenger'])} lost to {who(c['against'])} on {metric_label(c['metric'])}: "
        + interval_words(c)
        for c in checks
        if not c["passed"]
    ]
    served = decision["served"]
    if not decision["promoted"]:
        why = "; ".join(losses) or "the winner is the system already served"
        return f"kept the champion, {labels[served]}: {why}"
    if served != chosen:
        return f"promoted the baseline {who(served)}: " + "; ".join(losses)
    beaten = list(dict.fromkeys(who(c["against"]) for c in checks))
    if not beaten:
        return f"promoted {who(served)}: no baseline or champion to compare it with"
    return f"promoted {who(served)}: it did not lose to {' nor '.join(beaten)}"


def stage_sentence(
    stage: str,
    used: bool,
    validation: dict[str, Any] | None,
    test: dict[str, Any] | None,
    metric: str,
) -> str:
    """Whether ``stage`` is in the chosen system, and what lists with it scored against lists without it.

    Args:
        stage: ``ranker`` or ``diversification``.
        used: whether the chosen candidate has the stage.
        validation: the pooled validation values with and without the stage, or None.
        test: the test night's paired differences (with minus without), or None.
        metric: the selection metric.
    """
    name = metric_label(metric)
    said = f"{stage} used" if used else f"{stage} not used"
    on_validation = (
        f"lists without it scored {validation['without_value']:.4f} vs {validation['with_value']:.4f} "
        f"on the validation nights ({name})"
        if validation is not None
        else None
    )
    if test is None:
        return f"{said}: {on_validation}" if on_validation else said
    difference = test["differences"][metric]
    effect = "costs" if difference["mean"] < 0 else "adds"
    on_test = f"on the test night it {effect} {name} {interval_words(difference)} (with it minus without)"
    return f"{said}: " + "; ".join(words for words in (on_test, on_validation) if words)
