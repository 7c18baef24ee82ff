"""CPU time per candidate of a shard's filter, rank, diversify and check, and lleaves against LightGBM.

    python bench/bench_ranking.py --work-dir DIR [--repeat 3] [--scorers]

``--work-dir`` is a day that ``bench_candidates.py`` built (its lake serves the two-tower, a ranker and
diversification). Shard 0's lists are computed in this process as a shard task computes them
(:func:`pipelines.serving.lists.lists_for`, then :func:`pipelines.serving.checks.check_lists`), with one
difference: the next batch's retrieval runs inline between stages instead of in a background thread, so
each stage's CPU time (``time.process_time``: every thread of the process, the scorer's included) is its
own. CPU time is what a loaded machine distorts least; the median of ``--repeat`` runs is printed.
``PYTHONPATH=<another checkout>`` measures that checkout's code with this script (for a before/after).

``--scorers`` also compares the ranker's two scorers on 1M rows of synthetic features: LightGBM's
``Booster.predict`` and the trees compiled by lleaves (:meth:`pipelines.training.ranker.Ranker.compile`),
at 20, 50 and 100 trees, CPU microseconds per row with 1 and 2 threads, and how often the scores agree
to the last bit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import types
from concurrent.futures import Future
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

try:  # PYTHONPATH may name the checkout to measure
    import pipelines  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("filter", "rank", "diversify", "assemble", "check")


class _Inline(contextlib.AbstractContextManager):
    """An executor that runs each task when it is submitted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future:
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def shard_stages(work: Path, ds: dt.date, repeat: int) -> dict[str, Any]:
    """Median CPU seconds per stage of shard 0's lists over ``repeat`` runs, and the candidate counts."""
    import pipelines.serving.lists as lists_module
    import pipelines.serving.timing as timing
    from pipelines.core.lake import Lake
    from pipelines.core.paths import LakePaths
    from pipelines.core.settings import Settings
    from pipelines.serving.batch import UserBatch
    from pipelines.serving.checks import check_lists
    from pipelines.serving.context import load_context
    from pipelines.serving.inputs import read_shard_input
    from pipelines.serving.system import served_system
    from pipelines.serving.timing import StageTimer

    lake = Lake(str(work / "lake"))
    settings = Settings(data_dir=work, lake=str(work / "lake"))
    num_shards = lake.read_manifest(LakePaths.inputs(ds))["metadata"]["num_shards"]
    ctx = load_context(lake, ds, settings, served_system(lake, ds).system, 0, num_shards)
    users = read_shard_input(lake, ds, "users", 0, num_shards)
    batch = UserBatch.build(users, read_shard_input(lake, ds, "seen", 0, num_shards), ctx)
    lists_module.ThreadPoolExecutor = _Inline
    timing.time = types.SimpleNamespace(perf_counter=time.process_time)
    runs = []
    for _ in range(repeat):
        timer = StageTimer()
        candidates = lists_module.lists_for(ctx, batch, settings, timer)
        with timer("check"):
            check_lists(candidates, ctx, batch, settings.candidates.top_k)
        runs.append(timer.seconds)
    retrieved = users.num_rows * lists_module.retrieval_depth(ctx, settings)
    return {
        "users": users.num_rows,
        "retrieved": retrieved,
        "rows": candidates.num_rows,
        "cpu": {stage: statistics.median(run.get(stage, 0.0) for run in runs) for stage in STAGES},
    }


def scorers(rows: int = 1_000_000) -> list[dict[str, Any]]:
    """CPU microseconds per row of LightGBM and the compiled trees, and their agreement."""
    import lightgbm as lgb

    from pipelines.training.ranker import FEATURE_NAMES, Ranker

    rng = np.random.default_rng(0)
    width = len(FEATURE_NAMES)
    x_train = rng.normal(size=(200_000, width)).astype(np.float32)
    x_train[rng.random(x_train.shape) < 0.05] = np.nan
    label = (rng.random(len(x_train)) < 1 / (1 + np.exp(-x_train[:, 0] - x_train[:, 3]))).astype(int)
    x = rng.normal(size=(rows, width)).astype(np.float32)
    x64 = x.astype(np.float64)
    out = []
    for trees in (20, 50, 100):
        train = lgb.Dataset(
            x_train, label, group=np.full(len(x_train) // 500, 500), feature_name=list(FEATURE_NAMES)
        )
        booster = lgb.train({"objective": "lambdarank", "num_leaves": 31, "verbose": -1}, train, trees)
        for threads in (1, 2):
            plain = Ranker(booster, FEATURE_NAMES, 500, num_threads=threads)
            with tempfile.TemporaryDirectory() as cache:
                compiled = Ranker(booster, FEATURE_NAMES, 500, num_threads=threads).compile(Path(cache))
                started = time.process_time()
                fast = compiled.score(x64)
                compiled_us = (time.process_time() - started) / rows * 1e6
            started = time.process_time()
            slow = plain.score(x)
            lightgbm_us = (time.process_time() - started) / rows * 1e6
            out.append(
                {
                    "trees": trees,
                    "threads": threads,
                    "lightgbm_us": lightgbm_us,
                    "compiled_us": compiled_us,
                    "same_bits": float(np.mean(fast == slow)),
                    "max_difference": float(np.abs(fast - slow).max()),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="a day built by bench_candidates.py")
    parser.add_argument("--ds", type=dt.date.fromisoformat, default=dt.date(2026, 11, 22))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scorers", action="store_true", help="also compare lleaves with LightGBM")
    args = parser.parse_args()
    import pipelines

    load = os.getloadavg()[0]
    facts = shard_stages(args.work_dir, args.ds, args.repeat)
    print(f"code: {Path(pipelines.__file__).parent.parent}")
    print(
        f"shard 0: {facts['users']:,} users, {facts['retrieved']:,} retrieved, {facts['rows']:,} listed; "
        f"CPU s (median of {args.repeat}), load {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    per = {
        "filter": "retrieved",
        "rank": "retrieved",
        "diversify": "users",
        "assemble": "rows",
        "check": "rows",
    }
    for stage, seconds in facts["cpu"].items():
        unit = per[stage]
        name = {"retrieved": "retrieved post", "users": "user", "rows": "listed row"}[unit]
        print(f"  {stage:<10}{seconds:>8.2f} s{seconds / facts[unit] * 1e6:>10.3f} us per {name}")
    if args.scorers:
        load = os.getloadavg()[0]
        print("trees  threads  LightGBM us/row  lleaves us/row  same bits  max difference  (CPU time)")
        for row in scorers():
            print(
                f"{row['trees']:>5}{row['threads']:>9}{row['lightgbm_us']:>17.3f}{row['compiled_us']:>16.3f}"
                f"{row['same_bits']:>11.3f}{row['max_difference']:>16.1e}"
            )
        print(f"load {load:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
