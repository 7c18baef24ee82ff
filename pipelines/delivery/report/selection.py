"""The run report's view of a training run: the ``train_system`` fact (``pipelines.jobs.training``) read
into the gate's decision, the plan of nights, the test-night table with paired differences from the served
system, the validation trials and what each list stage of the chosen candidate is worth; the sentences
that say so are built by ``report.verdict``.
"""

from __future__ import annotations

from typing import Any

from pipelines.delivery.report.facts import as_float, as_int, as_numbers, read_system
from pipelines.delivery.report.verdict import stage_sentence, verdict
from pipelines.evaluation.gate import STAGE

# The list stages whose value the report shows, each with the system field that turns it on.
LIST_STAGES: tuple[tuple[str, str], ...] = (("ranker", "ranker_version"), ("diversification", "diversify"))


def _interval(value: Any) -> dict[str, float]:
    """``mean``, ``low`` and ``high`` of a bootstrap interval, all finite."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an interval object, got {value!r}")
    interval = {}
    for key in ("mean", "low", "high"):
        number = as_float(value[key])
        if number is None:
            raise TypeError(f"expected an interval of finite numbers, got {value!r}")
        interval[key] = number
    return interval


def _intervals(values: Any) -> dict[str, dict[str, float]]:
    if not isinstance(values, dict):
        raise TypeError(f"expected an object of intervals, got {values!r}")
    return {str(metric): _interval(interval) for metric, interval in sorted(values.items())}


def _decision(decision: dict[str, Any]) -> dict[str, Any]:
    checks = [
        {
            "challenger": str(check["challenger"]),
            "against": str(check["against"]),
            "metric": str(check["metric"]),
            **_interval(check),
            "passed": bool(check["passed"]),
        }
        for check in decision["checks"]
    ]
    return {
        "promoted": bool(decision["promoted"]),
        "served": str(decision["served"]),
        "reason": str(decision["reason"]),
        "checks": checks,
    }


def _plan(selection: dict[str, Any]) -> dict[str, Any]:
    plan = selection["plan"]
    test = str(plan["test"])
    nights = [
        {
            "night": str(night["night"]),
            "role": "test" if str(night["night"]) == test else "validation",
            "window_days": as_int(night["window_days"]),
            "eval_users": as_int(night["eval_users"]),
            "relevant_pairs": as_int(night["relevant_pairs"]),
            "catalog": as_int(night["catalog"]),
        }
        for night in selection["nights"]
    ]
    return {
        "validation": [str(night) for night in plan["validation"]],
        "test": test,
        "window_days": as_int(plan["window_days"]),
        "nights": nights,
        "seconds": as_numbers(selection["seconds"]),
    }


def _test_rows(test: dict[str, Any], served: str, chosen: str, metric: str) -> list[dict[str, Any]]:
    """One row per system replayed on the test night, best on ``metric`` first."""
    for role, name in (("served", served), ("chosen", chosen)):
        if name not in test:
            raise KeyError(f"the {role} system {name!r} is not among the test night's systems")
    rows = []
    for name, row in test.items():
        system = read_system(row["system"])
        rows.append(
            {
                "name": str(name),
                "role": str(row["role"]),
                "family": str(row["family"]),
                "label": system.label,
                "system": system.to_json(),
                "served": name == served,
                "chosen": name == chosen,
                "intervals": _intervals(row["intervals"]),
                "summary": as_numbers(row["summary"]),
            }
        )
    return sorted(rows, key=lambda r: (-r["intervals"][metric]["mean"], r["name"]))


def _trials(trials: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Each validation step with its options, best on ``metric`` first."""
    out = []
    for trial in trials:
        chosen = str(trial["chosen"])
        options = [
            {"name": str(name), "chosen": name == chosen, "metrics": as_numbers(values)}
            for name, values in trial["options"].items()
        ]
        options.sort(key=lambda o: (-o["metrics"][metric], o["name"]))
        out.append(
            {
                "step": str(trial["step"]),
                "nights": [str(night) for night in trial["nights"]],
                "chosen": chosen,
                "options": options,
            }
        )
    return out


def _validation_value(trial: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The best option with a stage against the option without it (whose name every other option's
    name extends), on the pooled validation nights; None when the trial has no such pair."""
    names = [option["name"] for option in trial["options"]]
    without = next(
        (n for n in names if all(o == n or o.startswith(f"{n} + ") for o in names)),
        None,
    )
    with_stage = next((o for o in trial["options"] if o["name"] != without), None)
    if without is None or with_stage is None:
        return None
    without_value = next(o for o in trial["options"] if o["name"] == without)["metrics"][metric]
    with_value = with_stage["metrics"][metric]
    return {
        "step": trial["step"],
        "with": with_stage["name"],
        "without": without,
        "with_value": with_value,
        "without_value": without_value,
        "difference": with_value - without_value,
    }


def _stages(
    rows: list[dict[str, Any]],
    trials: list[dict[str, Any]],
    stage_differences: dict[str, Any],
    metric: str,
) -> list[dict[str, Any]]:
    """What each list stage of the chosen candidate is worth: on the validation nights (the trial that
    kept or dropped it) and, when it was kept, on the test night against the candidate without it."""
    chosen = next(row for row in rows if row["chosen"])
    stages = []
    for stage, field in LIST_STAGES:
        used = bool(chosen["system"][field])
        trial = next((t for t in trials if t["step"] == f"{chosen['family']}: {stage}"), None)
        validation = _validation_value(trial, metric) if trial is not None else None
        without = next((r for r in rows if r["role"] == STAGE and not r["system"][field]), None)
        test = None
        if used and without is not None:
            test = {
                "with": chosen["name"],
                "without": without["name"],
                "differences": _intervals(stage_differences[without["name"]]),
            }
        if validation is None and test is None:
            continue
        value = test["differences"][metric]["mean"] if test else validation["difference"]
        stages.append(
            {
                "stage": stage,
                "used": used,
                "worse": value < 0,
                "validation": validation,
                "test": test,
                "sentence": stage_sentence(stage, used, validation, test, metric),
            }
        )
    return stages


def system_training(fact: dict[str, Any]) -> dict[str, Any]:
    """The training section from the ``train_system`` fact: the decision and its verdict, and, unless the
    run was skipped, everything the selection measured."""
    section: dict[str, Any] = {
        "version": fact.get("version"),
        "promoted": bool(fact["promoted"]),
        "skipped": bool(fact.get("skipped", False)),
        "reason": str(fact["reason"]),
        "exported": [
            {"kind": str(model["kind"]), "version": str(model["version"])}
            for model in fact.get("exported", [])
        ],
        "selection": None,
    }
    if section["skipped"]:
        section["verdict"] = f"no training run: {section['reason']}"
        return section
    selection = fact["selection"]
    metric = str(selection["metric"])
    decision = _decision(selection["decision"])
    chosen = str(selection["chosen"]["name"])
    rows = _test_rows(selection["test"], decision["served"], chosen, metric)
    differences = selection["differences_from_served"]
    trials = _trials(selection["trials"], metric)
    section["selection"] = {
        "metric": metric,
        "chosen": chosen,
        "decision": decision,
        "plan": _plan(selection),
        "test": rows,
        "differences_from_served": [
            {
                "name": row["name"],
                "label": row["label"],
                "role": row["role"],
                "differences": _intervals(differences[row["name"]]),
            }
            for row in rows
            if not row["served"]
        ],
        "trials": trials,
        "stages": _stages(rows, trials, selection["stage_differences"], metric),
    }
    section["verdict"] = verdict(decision, rows, chosen)
    return section
