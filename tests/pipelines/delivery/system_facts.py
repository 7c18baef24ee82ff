"""Hand-written ``train_system`` facts shaped like ``selection_facts`` (pipelines/evaluation/selection.py):
two recall_at_50 / ndcg_at_10 tables small enough to hand-compute what the report must show.

``KEPT``: the two-tower candidate (ranker, diversification, age limit) beats the best baseline, ALS, but
loses to the champion on recall@50, so the champion stays; its ranker adds recall, its diversification
costs some. ``RANKER_WORSE``: on the validation nights the ranker made the two-tower's lists worse, so the
plain two-tower is chosen and promoted without it.
"""

from __future__ import annotations

from typing import Any

from pipelines.serving.system import ServedSystem

TT_VERSION = "2026-11-22-20261123T021501123456Z-1f2e3d4c"
RANKER_VERSION = "2026-11-22-20261123T021601123456Z-2e3d4c5b"
ALS_VERSION = "2026-11-22-20261123T021701123456Z-3d4c5b6a"
TT_CHAMPION = "2026-11-20-20261121T021501123456Z-aaaaaaaa"
RANKER_CHAMPION = "2026-11-20-20261121T021601123456Z-bbbbbbbb"
SYSTEM_CHAMPION = "2026-11-20-20261121T021701123456Z-cccccccc"
NIGHTS = ["2026-11-20", "2026-11-21", "2026-11-22"]

CHAMPION_SYSTEM = ServedSystem("two_tower", TT_CHAMPION, ranker_version=RANKER_CHAMPION)
CANDIDATE = "two-tower logq_correction=True + ranker (impressions) + age<=7d + diversified"
NO_RANKER = "two-tower logq_correction=True + age<=7d + diversified"
NO_DIVERSIFY = "two-tower logq_correction=True + ranker (impressions) + age<=7d"
ALS = "ALS f=16 + age<=7d"
POPULAR = "most popular 1d"


def interval(mean: float, half: float = 0.03) -> dict[str, float]:
    return {"mean": mean, "low": round(mean - half, 6), "high": round(mean + half, 6)}


def system(retriever: str, **fields: Any) -> dict[str, Any]:
    return ServedSystem(retriever, **fields).to_json()


def row(role: str, family: str, served: dict[str, Any], recall: float, ndcg: float) -> dict[str, Any]:
    """One test-night row: means with +-0.03 intervals, and the summary the gate recorded."""
    return {
        "role": role,
        "family": family,
        "system": served,
        "label": ServedSystem.from_json(served).label,
        "summary": {
            "recall_at_50": recall,
            "ndcg_at_10": ndcg,
            "coverage_at_50": 0.25,
            "fresh_share_at_50": 0.5,
            "n_users": 40.0,
        },
        "intervals": {"recall_at_50": interval(recall), "ndcg_at_10": interval(ndcg)},
    }


def popular_row() -> dict[str, Any]:
    """Most popular of the last day, the weakest baseline of both facts."""
    popular = system("most_popular", two_tower_version=None, diversify=False, popularity_window_days=1)
    return row("baseline", "most_popular", popular, 0.2, 0.1)


def options(**recalls: float) -> dict[str, dict[str, float]]:
    return {name: {"recall_at_50": value, "ndcg_at_10": value / 2} for name, value in recalls.items()}


def trial(step: str, chosen: str, values: dict[str, float]) -> dict[str, Any]:
    return {"step": step, "nights": NIGHTS[:2], "chosen": chosen, "options": options(**values)}


def check(challenger: str, against: str, metric: str, mean: float, passed: bool) -> dict[str, Any]:
    return {
        "challenger": challenger,
        "against": against,
        "metric": metric,
        **interval(mean),
        "passed": passed,
    }


def plan_and_nights() -> dict[str, Any]:
    return {
        "plan": {"validation": NIGHTS[:2], "test": NIGHTS[2], "window_days": 1},
        "nights": [
            {"night": night, "window_days": 1, "eval_users": 40 + i, "relevant_pairs": 60 + i, "catalog": 20}
            for i, night in enumerate(NIGHTS)
        ],
        "seconds": {"nights": 1.5, "validation": 30.25, "test": 8.0, "total": 39.75},
    }


def recipe(name: str, ranker: str, diversify: bool) -> dict[str, Any]:
    return {
        "name": name,
        "family": "two_tower",
        "variant": {"logq_correction": True},
        "ranker": ranker,
        "diversify": diversify,
        "max_item_age_days": 7.0 if "age" in name else None,
        "popularity_window_days": None,
        "knn_neighbors": 100,
        "als_factors": 32,
    }


def kept_fact() -> dict[str, Any]:
    """The gate kept the champion: the candidate lost to it on recall@50 by 0.06 [-0.09, -0.03]."""
    tt = {"two_tower_version": TT_VERSION, "max_item_age_days": 7.0}
    test = {
        CANDIDATE: row(
            "candidate", "two_tower", system("two_tower", ranker_version=RANKER_VERSION, **tt), 0.34, 0.2
        ),
        NO_RANKER: row("stage", "two_tower", system("two_tower", **tt), 0.30, 0.15),
        NO_DIVERSIFY: row(
            "stage",
            "two_tower",
            system("two_tower", ranker_version=RANKER_VERSION, diversify=False, **tt),
            0.36,
            0.21,
        ),
        ALS: row(
            "baseline",
            "als",
            system(
                "als", two_tower_version=None, als_version=ALS_VERSION, diversify=False, max_item_age_days=7.0
            ),
            0.32,
            0.19,
        ),
        POPULAR: popular_row(),
        "champion": row("champion", "two_tower", CHAMPION_SYSTEM.to_json(), 0.40, 0.22),
    }
    checks = [
        check(CANDIDATE, ALS, "recall_at_50", 0.02, True),
        check(CANDIDATE, ALS, "ndcg_at_10", 0.01, True),
        check(CANDIDATE, "champion", "recall_at_50", -0.06, False),
        check(CANDIDATE, "champion", "ndcg_at_10", -0.02, True),
    ]
    reason = (
        f"{CANDIDATE} does not lose to the best baseline, {ALS}; {CANDIDATE} lost to the champion; "
        "the champion stays"
    )
    return {
        "version": SYSTEM_CHAMPION,
        "promoted": False,
        "reason": reason,
        "exported": [],
        "selection": {
            "metric": "recall_at_50",
            **plan_and_nights(),
            "trials": [
                trial(
                    "two_tower: retriever",
                    "two-tower logq_correction=True",
                    {"two-tower": 0.3, "two-tower logq_correction=True": 0.31},
                ),
                trial(
                    "two_tower: ranker",
                    "two-tower logq_correction=True + ranker (impressions)",
                    {
                        "two-tower logq_correction=True": 0.31,
                        "two-tower logq_correction=True + ranker (impressions)": 0.35,
                        "two-tower logq_correction=True + ranker (retrieval)": 0.33,
                    },
                ),
                trial(
                    "two_tower: age limit",
                    NO_DIVERSIFY,
                    {"two-tower logq_correction=True + ranker (impressions)": 0.35, NO_DIVERSIFY: 0.37},
                ),
                trial("two_tower: diversification", CANDIDATE, {NO_DIVERSIFY: 0.37, CANDIDATE: 0.38}),
                trial("als: retriever", "ALS f=16", {"ALS f=16": 0.3}),
                trial("system", CANDIDATE, {CANDIDATE: 0.38, ALS: 0.33, POPULAR: 0.25}),
            ],
            "chosen": recipe(CANDIDATE, "impressions", True),
            "test": test,
            # The champion minus each system: 0.40 - recall, 0.22 - ndcg, +-0.03.
            "differences_from_served": {
                name: {
                    "recall_at_50": interval(round(0.40 - r["summary"]["recall_at_50"], 6)),
                    "ndcg_at_10": interval(round(0.22 - r["summary"]["ndcg_at_10"], 6)),
                }
                for name, r in test.items()
                if name != "champion"
            },
            # The candidate minus each stage variant: the ranker adds 0.04, diversification costs 0.02.
            "stage_differences": {
                NO_RANKER: {"recall_at_50": interval(0.04), "ndcg_at_10": interval(0.05)},
                NO_DIVERSIFY: {"recall_at_50": interval(-0.02), "ndcg_at_10": interval(-0.01)},
            },
            "decision": {
                "promoted": False,
                "served": "champion",
                "system": CHAMPION_SYSTEM.to_json(),
                "reason": reason,
                "checks": checks,
            },
        },
    }


def ranker_worse_fact() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ranker scored 0.35 against 0.40 without it on the validation nights, so the plain two-tower
    (undiversified too) is chosen and promoted over most popular; returns the fact and the promoted system."""
    plain = system("two_tower", two_tower_version=TT_VERSION, diversify=False)
    test = {
        "two-tower": row("candidate", "two_tower", plain, 0.4, 0.2),
        POPULAR: popular_row(),
    }
    reason = f"two-tower does not lose to the best baseline, {POPULAR}; no champion yet; promoted a model"
    fact = {
        "version": "2026-11-22-20261123T021801123456Z-dddddddd",
        "promoted": True,
        "reason": reason,
        "exported": [{"kind": "two_tower", "version": TT_VERSION}],
        "selection": {
            "metric": "recall_at_50",
            **plan_and_nights(),
            "trials": [
                trial("two_tower: retriever", "two-tower", {"two-tower": 0.4}),
                trial(
                    "two_tower: ranker",
                    "two-tower",
                    {
                        "two-tower": 0.4,
                        "two-tower + ranker (impressions)": 0.35,
                        "two-tower + ranker (retrieval)": 0.33,
                    },
                ),
                trial(
                    "two_tower: diversification",
                    "two-tower",
                    {"two-tower": 0.4, "two-tower + diversified": 0.39},
                ),
                trial("system", "two-tower", {"two-tower": 0.4, POPULAR: 0.25}),
            ],
            "chosen": recipe("two-tower", "none", False),
            "test": test,
            "differences_from_served": {
                POPULAR: {"recall_at_50": interval(0.2), "ndcg_at_10": interval(0.1)}
            },
            "stage_differences": {},
            "decision": {
                "promoted": True,
                "served": "two-tower",
                "system": plain,
                "reason": reason,
                "checks": [
                    check("two-tower", POPULAR, "recall_at_50", 0.2, True),
                    check("two-tower", POPULAR, "ndcg_at_10", 0.1, True),
                ],
            },
        },
    }
    return fact, plain
