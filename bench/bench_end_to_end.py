"""End-to-end benchmark: the nightly job through real Airflow, wall time per DAG task.

    python bench/bench_end_to_end.py --scale default --run-date 2026-11-22 [--workdir /tmp/nightfeed-e2e]

In one run it: generates the world, builds the feature history, runs the features, training and nightly
DAGs with ``airflow dags test`` (timing each DAG and, from Airflow's metadata database, each task), then
runs the same nightly stages again in-process (``python -m pipelines nightly``) as the baseline, so the
cost of orchestration shows as a ratio. Everything lives under ``--workdir`` (a fresh data folder and
Airflow home); the repository's own ``data/`` and ``airflow_home/`` are not touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAGS = ("nightfeed_features", "nightfeed_training", "nightfeed_nightly")


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}); log: {log}")
    return elapsed


def task_durations(airflow_db: Path, dag_id: str) -> list[tuple[str, int, float]]:
    with sqlite3.connect(airflow_db) as con:
        rows = con.execute(
            "select task_id, map_index, (julianday(end_date) - julianday(start_date)) * 86400 "
            "from task_instance where dag_id = ? and state = 'success' order by start_date",
            (dag_id,),
        ).fetchall()
    return [(task, index, seconds or 0.0) for task, index, seconds in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="default", choices=["tiny", "default", "medium"])
    parser.add_argument("--run-date", default=(dt.date.today() - dt.timedelta(days=1)).isoformat())
    parser.add_argument("--workdir", default="/tmp/nightfeed-e2e")
    args = parser.parse_args()

    work = Path(args.workdir) / args.scale
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    (work / "logs").mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "NIGHTFEED_DATA_DIR": str(work / "data"),
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    py = [sys.executable, "-m", "pipelines"]
    ds = args.run_date
    day_before = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    steps: list[tuple[str, float]] = []
    steps.append(("airflow db migrate", run(["airflow", "db", "migrate"], env, work / "logs/migrate.log")))
    run(["airflow", "pools", "set", "nightfeed_training", "1", "training"], env, work / "logs/pool.log")
    world = [*py, "world", "--scale", args.scale, "--end-date", ds]
    steps.append((f"world ({args.scale})", run(world, env, work / "logs/world.log")))
    features = [*py, "features", "--end", day_before]
    steps.append(("feature history (CLI)", run(features, env, work / "logs/features.log")))
    for dag in DAGS:
        steps.append(
            (f"dags test {dag}", run(["airflow", "dags", "test", dag, ds], env, work / f"logs/{dag}.log"))
        )
    baseline = run([*py, "nightly", "--ds", ds], env, work / "logs/nightly-in-process.log")

    print(f"# End to end, scale={args.scale}, ds={ds}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("\n| step | wall s |\n|---|---|")
    for name, seconds in steps:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **total** | {sum(s for _, s in steps):.1f} |")
    for dag in DAGS:
        print(f"\n{dag}: task wall seconds (from the Airflow metadata DB)\n")
        print("| task | map index | s |\n|---|---|---|")
        for task, index, seconds in task_durations(work / "airflow" / "airflow.db", dag):
            print(f"| {task} | {'' if index < 0 else index} | {seconds:.1f} |")
    nightly = dict(steps)["dags test nightfeed_nightly"]
    print(
        f"\nnightly through Airflow {nightly:.1f} s vs in-process {baseline:.1f} s: "
        f"ratio {nightly / baseline:.2f} (orchestration overhead)"
    )


if __name__ == "__main__":
    main()
