"""Quality of the lists users receive: the training job's replay of a held-out night, on several data sets.

    python bench/bench_quality.py default popularity collaborative content freshness ratings \\
        movielens:/path/to/ml-100k movielens:/path/to/ml-latest-small [--run-date 2026-11-22]

For each data set (a synthetic world regime, or MovieLens files: ``u.data``/``ratings.dat``/
``ratings.csv`` layouts), in a fresh data folder under ``--workdir`` and a child process of its own: load
the data, build the feature history, and run the real training job (``train_system``) with the default
settings. That job chooses the system on validation nights and replays the test night, a night no choice
looked at, exactly as the nightly job would publish its lists; the bench prints that night's table and
checks the targets:

* the served lists against the best tuned baseline: the lower end of the paired 95% interval of
  (served - baseline) on Recall@50 and NDCG@10 is >= -0.01 (the served system may be a baseline);
* the two-tower path (retrieval and its chosen stages) against ALS on the ``ratings`` regime: better;
* on the ``default`` world, the served Recall@50 is >= 1.5x the best baseline's.

MovieLens data is run as of its last day (``--movielens-end`` cuts it earlier); the feature history
starts ``--history-days`` before the first validation night, which is all the models look at.
``--json FILE`` writes every figure. The load average is printed next to the figures. ``--retrain`` keeps a
data set's warehouse (its loaded data and built features) from an earlier run in ``--workdir`` and runs only
the training job again, on a fresh lake.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REGIMES = ("default", "popularity", "collaborative", "content", "freshness", "ratings")
METRICS = ("recall_at_50", "ndcg_at_10")
SHOWN = ("recall_at_10", "recall_at_50", "recall_at_100", "ndcg_at_10", "coverage_at_10")
FLOOR = -0.01


def _load(dataset: str, run_date: dt.date) -> None:
    """Load ``dataset`` into the warehouse of ``NIGHTFEED_DATA_DIR`` (a world ending on ``run_date``)."""
    from pipelines.core.context import settings_with
    from pipelines.core.warehouse import open_warehouse

    settings = settings_with(None)
    with open_warehouse(settings) as warehouse:
        if dataset.startswith("movielens:"):
            from pipelines.data.movielens import import_movielens

            import_movielens(warehouse, dataset.split(":", 1)[1])
            return
        from pipelines.data.world import World, load_world, world_config

        config = world_config("default", settings.world, dataset)
        load_world(warehouse, World(config, run_date))


def run_one(
    dataset: str, run_date: dt.date, movielens_end: dt.date | None, history_days: int, retrain: bool = False
) -> dict:
    """Load, build features, train: the training job's facts with the timings (in this process); with
    ``retrain``, only train, on the data and features already in the warehouse."""
    from pipelines.cli import main as cli
    from pipelines.core import jobs
    from pipelines.core.context import settings_with
    from pipelines.core.warehouse import open_warehouse
    from pipelines.jobs import run

    started = time.perf_counter()
    if not retrain:
        _load(dataset, run_date)
    loaded = time.perf_counter()
    with open_warehouse(settings_with(None)) as warehouse:
        days = warehouse.partitions("raw_events")
    ds = run_date
    if dataset.startswith("movielens:"):
        # MovieLens is run as of its last day (or --movielens-end before it).
        ds = min(days[-1], movielens_end) if movielens_end else days[-1]
    first = max(days[0], ds - dt.timedelta(days=history_days))
    # The history build a user runs (`features --start --end`): quiet days are built from the days before.
    if not retrain and cli(["features", "--start", first.isoformat(), "--end", ds.isoformat()]) != 0:
        raise RuntimeError(f"features --start {first} --end {ds} failed")
    featured = time.perf_counter()
    trained = run(jobs.TRAIN_SYSTEM, ds)
    return {
        "dataset": dataset,
        "ds": ds.isoformat(),
        "feature_days": (ds - first).days + 1,
        "seconds": {
            "load": round(loaded - started, 1),
            "features": round(featured - loaded, 1),
            "train": round(time.perf_counter() - featured, 1),
        },
        "train": trained,
    }


def _interval(i: dict[str, float]) -> str:
    return f"{i['mean']:+.3f} [{i['low']:+.3f}, {i['high']:+.3f}]"


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The bench's targets on one data set's test night.

    The best tuned baseline is the baseline-family system (most popular, item-kNN, ALS, with or without
    stages) with the highest Recall@50 on the test night; when the served system is that one, the
    difference is zero.
    """
    selection = result["train"]["selection"]
    test, served = selection["test"], selection["decision"]["served"]
    baselines = [n for n, row in test.items() if row["family"] != "two_tower" and row["role"] != "champion"]
    checks: dict[str, Any] = {"served": served}
    if baselines:
        best = max(baselines, key=lambda n: test[n]["summary"]["recall_at_50"])
        zero = {"mean": 0.0, "low": 0.0, "high": 0.0}
        diff = selection["differences_from_served"].get(best, dict.fromkeys(METRICS, zero))
        checks["best_baseline"] = best
        checks["vs_best_baseline"] = {m: diff[m] for m in METRICS}
        checks["matches_best_baseline"] = all(diff[m]["low"] >= FLOOR for m in METRICS)
        checks["recall_at_50_ratio"] = test[served]["summary"]["recall_at_50"] / max(
            test[best]["summary"]["recall_at_50"], 1e-12
        )
    model = selection.get("model")
    als = [n for n in selection.get("model_differences", {}) if test[n]["family"] == "als"]
    if model and als:
        checks["model"] = model
        checks["model_vs_als"] = {m: selection["model_differences"][als[0]][m] for m in METRICS}
        alone = selection.get("model_alone")
        if alone:  # a blended model: its two-tower on its own, too
            checks["model_alone"] = alone
            checks["model_alone_vs_als"] = {
                m: selection["model_alone_differences"][als[0]][m] for m in METRICS
            }
    return checks


def print_result(result: dict[str, Any], checks: dict[str, Any]) -> None:
    selection = result["train"]["selection"]
    plan, test = selection["plan"], selection["test"]
    users = {n["night"]: n["eval_users"] for n in selection["nights"]}
    print(f"\n## {result['dataset']} (run date {result['ds']}, {result['feature_days']} feature days)")
    print(
        f"test night {plan['test']} ({users[plan['test']]} users), validation nights "
        f"{', '.join(plan['validation'])}, window {plan['window_days']} days; seconds {result['seconds']}"
    )
    print("\n| system | role | " + " | ".join(SHOWN) + " |\n|---|---|" + "---|" * len(SHOWN))
    order = sorted(test, key=lambda n: -test[n]["summary"]["recall_at_50"])
    for name in order:
        row = test[name]
        cells = []
        for metric in SHOWN:
            interval = row["intervals"].get(metric)
            value = row["summary"][metric]
            cells.append(
                f"{value:.3f}" + (f" [{interval['low']:.3f}, {interval['high']:.3f}]" if interval else "")
            )
        mark = " **served**" if name == checks["served"] else ""
        print(f"| {name}{mark} | {row['role']} | " + " | ".join(cells) + " |")
    print(f"\ndecision: {selection['decision']['reason']}")
    if "best_baseline" in checks:
        diffs = ", ".join(f"{m} {_interval(i)}" for m, i in checks["vs_best_baseline"].items())
        verdict = "met" if checks["matches_best_baseline"] else "MISSED"
        print(f"served - best baseline ({checks['best_baseline']}): {diffs} -> target {verdict}")
        print(f"served / best baseline Recall@50: {checks['recall_at_50_ratio']:.2f}x")
    if "model_vs_als" in checks:
        diffs = ", ".join(f"{m} {_interval(i)}" for m, i in checks["model_vs_als"].items())
        print(f"two-tower path ({checks['model']}) - ALS: {diffs}")
    if "model_alone_vs_als" in checks:
        diffs = ", ".join(f"{m} {_interval(i)}" for m, i in checks["model_alone_vs_als"].items())
        print(f"two-tower path without its blend ({checks['model_alone']}) - ALS: {diffs}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", help=f"regimes {REGIMES} or movielens:DIR")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 22))
    parser.add_argument("--movielens-end", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--history-days", type=int, default=400)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nightfeed-quality"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--retrain", action="store_true", help="reuse each data set's warehouse in --workdir; train only"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for dataset in args.datasets:
        if dataset not in REGIMES and not dataset.startswith("movielens:"):
            parser.error(f"unknown data set {dataset!r}: a regime {REGIMES} or movielens:DIR")
    if args.child:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        result = run_one(args.datasets[0], args.run_date, args.movielens_end, args.history_days, args.retrain)
        print(json.dumps(result, default=str))
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    results = []
    for dataset in args.datasets:
        work = args.workdir / dataset.replace("movielens:", "ml-").replace("/", "_")
        if args.retrain:
            if not (work / "warehouse.duckdb").exists():
                parser.error(f"--retrain: no warehouse of {dataset} in {work}; run without --retrain first")
            shutil.rmtree(work / "lake", ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        env = {
            **os.environ,
            "NIGHTFEED_DATA_DIR": str(work),
            "PYTHONPATH": str(REPO),
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        load_before = os.getloadavg()[0]
        command = [sys.executable, __file__, dataset, "--child", "--run-date", str(args.run_date)]
        command += ["--history-days", str(args.history_days)] + (["--retrain"] if args.retrain else [])
        if args.movielens_end:
            command += ["--movielens-end", str(args.movielens_end)]
        with open(work / "bench.log", "w") as log:
            proc = subprocess.run(
                command, env=env, stdout=subprocess.PIPE, stderr=log, text=True, check=False
            )
        if proc.returncode != 0:
            print(f"\n## {dataset}: FAILED (exit {proc.returncode}); log: {work / 'bench.log'}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        checks = targets(result)
        result["targets"] = checks
        print_result(result, checks)
        print(f"load average before / after: {result['load_average']}")
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
