"""Quality benchmark: two-tower, ranker and baselines on the temporal hold-out, same run, same data.

    python bench/bench_quality.py --scale default --run-date 2026-11-22
    python bench/bench_quality.py --movielens path/to/ml-100k [--train-days 60 --eval-days 7]

Builds a fresh data folder under ``--workdir``, loads the synthetic world (or imports MovieLens-format
files: ``u.data``, ``u.item``, ``u.user``), builds the feature history, trains the two-tower model and the
ranker with the real jobs, and prints Recall@K / NDCG@10 / coverage of the two-tower next to most-popular
and item-kNN, and NDCG of the ranker next to the retrieval-only and logged orders.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="default", choices=["tiny", "default", "medium"])
    parser.add_argument("--run-date", default="2026-11-22", help="last day of the synthetic world")
    parser.add_argument("--movielens", help="folder with u.data, u.item, u.user instead of the world")
    parser.add_argument("--train-days", type=int, default=None)
    parser.add_argument("--eval-days", type=int, default=None)
    parser.add_argument("--workdir", default="/tmp/nightfeed-quality")
    args = parser.parse_args()

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.environ.update(
        {
            "NIGHTFEED_DATA_DIR": str(work),
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # MovieLens posts are years old: keep every post eligible.
            **({"NIGHTFEED_CANDIDATES__MAX_ITEM_AGE_DAYS": "100000"} if args.movielens else {}),
        }
    )
    for section in ("TWO_TOWER", "RANKER"):
        if args.train_days:
            os.environ[f"NIGHTFEED_{section}__TRAIN_DAYS"] = str(args.train_days)
        if args.eval_days:
            os.environ[f"NIGHTFEED_{section}__EVAL_DAYS"] = str(args.eval_days)
    sys.path.insert(0, str(REPO))

    from pipelines.core import jobs
    from pipelines.core.context import settings_with
    from pipelines.core.errors import PermanentError
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.movielens import import_movielens
    from pipelines.data.world import World, load_world, world_config
    from pipelines.jobs import run

    settings = settings_with(None)
    with open_warehouse(settings) as warehouse:
        if args.movielens:
            import_movielens(warehouse, args.movielens)
        else:
            load_world(
                warehouse,
                World(world_config(args.scale, settings.world), dt.date.fromisoformat(args.run_date)),
            )
        days = warehouse.partitions("raw_events")
    source = f"MovieLens files in {args.movielens}" if args.movielens else f"synthetic world ({args.scale})"
    ds = days[-1]
    built = 0
    for day in days:
        try:
            run(jobs.BUILD_FEATURES, day)
            built += 1
        except PermanentError as exc:  # a day without events in an imported data set
            print(f"skipped {day}: {exc}", file=sys.stderr)
    two_tower = run(jobs.TRAIN_TWO_TOWER, ds)
    ranker = run(jobs.TRAIN_RANKER, ds)
    report(source, ds, built, two_tower, ranker)


def report(source: str, ds: dt.date, days: int, two_tower: dict[str, Any], ranker: dict[str, Any]) -> None:
    print(f"# Quality on the temporal hold-out: {source}, last day {ds}, {days} days of features")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"two-tower trained on {two_tower['n_train_examples']} examples\n")
    cols = ("recall_at_10", "recall_at_50", "recall_at_100", "ndcg_at_10", "coverage_at_10")
    print("| model | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    metrics = two_tower["metrics"]
    for name in ("two_tower", "most_popular", "item_knn"):
        print(f"| {name} | " + " | ".join(f"{metrics[name].get(c, float('nan')):.4f}" for c in cols) + " |")
    ratio = metrics["two_tower"]["recall_at_50"] / max(metrics["most_popular"]["recall_at_50"], 1e-12)
    print(f"\ntwo-tower / most-popular Recall@50: {ratio:.2f}x")
    m = ranker["metrics"]
    print("\n| order | ndcg_at_5 | ndcg_at_10 | map |\n|---|---|---|---|")
    for label, prefix in (("ranker", ""), ("retrieval only", "retrieval_"), ("logged feed", "logged_")):
        if f"{prefix}ndcg_at_10" in m:
            values = (m[f"{prefix}ndcg_at_5"], m[f"{prefix}ndcg_at_10"], m[f"{prefix}map"])
            print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")


if __name__ == "__main__":
    main()
