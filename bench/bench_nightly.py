"""The whole nightly job at scale on one worker: train_ranker, then export -> embed -> index -> candidate
shards -> digests, each job in a fresh process as a worker runs it, with wall time (start-up and loads
included), CPU time, peak memory (``VmHWM``) and the load average around it.

    python bench/bench_nightly.py --data-dir DIR --world-lake LAKE [--shards 4] [--depth 250]
        [--ranker VERSION] [--compare-shards 16]

``--data-dir`` holds a world with its feature history (``python -m pipelines world --scale large`` and
``features --end``, with ``NIGHTFEED_DATA_DIR`` set to it). Its lake gets the two-tower the small world
``--world-lake`` serves (trained there: the large world is too big to train the whole selection on here),
a ranker trained by the selection's own code on the large world's logged impressions, through the index
(:meth:`pipelines.evaluation.night_models.NightModels.ranker_from_impressions`), and a served system: that
two-tower, that ranker, diversification, retrieval to ``--depth``; ``--ranker VERSION`` serves a ranker the
lake holds already (trained by an earlier run) instead of training one. Jobs run one after the other, as on a
single worker. ``--compare-shards N ...`` exports the inputs again in each number of shards and loads
the inputs of shard 0 as a candidates task does (its users and seen pairs), to compare the load of a
shard with its size; ``--compare-only`` does only that, on a day whose nightly ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import child_result, gb, log, run_child

TARGET_MINUTES, TARGET_MEMORY = 15, 8 * 2**30


# -- children --------------------------------------------------------------------------------------------
def run_job(args: argparse.Namespace) -> dict[str, Any]:
    """One job of the catalog, as a worker's task runs it."""
    from pipelines.core import jobs
    from pipelines.jobs import run

    job = getattr(jobs, args.job)
    result = run(job, args.ds, json.loads(args.params), holder=args.holder, **json.loads(args.kwargs))
    return {"result": result}


def load_shard(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_users`` stage of candidates shard 0 (its users and seen pairs), as
    :func:`pipelines.serving.shards.candidates_for_shard` runs it, timed; ``load_context`` (catalog,
    embeddings, index, models) is the same for every shard and the nightly's shards report it."""

    from pipelines.core.lake import Lake
    from pipelines.core.settings import load_settings
    from pipelines.serving.inputs import read_shard_input

    lake = Lake(load_settings().lake_url)
    # Not timed: the first Parquet read of a process starts pyarrow's thread pools, whatever its size.
    read_shard_input(lake, args.ds, "profiles", 0, args.num_shards)
    started = time.perf_counter()
    seen = read_shard_input(lake, args.ds, "seen", 0, args.num_shards)
    users = read_shard_input(lake, args.ds, "users", 0, args.num_shards)
    seconds = {"load_users": time.perf_counter() - started}
    return {"users": users.num_rows, "seen_pairs": seen.num_rows, "seconds": seconds}


def train_ranker(args: argparse.Namespace) -> dict[str, Any]:
    """The impressions ranker of the night after ``ds``, as the selection trains it, exported."""
    from pipelines.core.lake import Lake
    from pipelines.core.settings import load_settings
    from pipelines.core.warehouse import open_warehouse
    from pipelines.evaluation.night_models import NightModels
    from pipelines.serving.model_store import ModelStore
    from pipelines.training.ranker import save_ranker

    settings = load_settings()
    lake = Lake(settings.lake_url)
    night = args.ds + dt.timedelta(days=1)
    store = ModelStore(lake, compiled_ranker=settings.ranker.compiled_scoring)
    with open_warehouse(settings) as warehouse:
        trained = NightModels(warehouse, settings, store).ranker_from_impressions(night, args.two_tower)
    if trained is None:
        raise SystemExit(f"no ranker: the data before {night} logs no impressions")
    save_ranker(trained.result, lake, trained.version)
    metrics = trained.result.metrics
    return {
        "version": trained.version,
        "train_rows": metrics["train_rows"],
        "eval_rows": metrics["eval_rows"],
        "train_groups": metrics["train_groups"],
        "trees": metrics["best_iteration"],
        "fit_seconds": metrics["fit_seconds"],
        "ndcg_at_10": metrics["ndcg_at_10"],
        "retrieval_ndcg_at_10": metrics["retrieval_ndcg_at_10"],
    }


# -- the parent ------------------------------------------------------------------------------------------
class Night:
    """The steps of one run, each a child process, in order."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = {"NIGHTFEED_DATA_DIR": args.data_dir}
        # One lease holder for every job of the run, as one DAG run's tasks share one.
        self.holder = f"bench_nightly:{os.getpid()}:{time.time_ns()}"
        self.steps: list[tuple[str, dict[str, Any]]] = []

    def child(self, name: str, command: list[str]) -> dict[str, Any]:
        base = [__file__, "--data-dir", self.args.data_dir, "--ds", self.args.ds.isoformat()]
        result = run_child(base + command, self.env)
        self.steps.append((name, result))
        facts = result.get("result")
        shard = {k: facts[k] for k in ("users", "users_per_s", "seconds") if k in facts} if facts else {}
        log(
            f"{name}: {result['wall_seconds']:.1f} s, peak {gb(result['peak_memory'])}, load "
            f"{result['loadavg'][0]} -> {result['loadavg'][1]} {json.dumps(shard) if shard else ''}"
        )
        return result

    def job(self, name: str, params: dict[str, Any], label: str | None = None, **kwargs: Any) -> Any:
        command = ["--job", name, "--params", json.dumps(params), "--kwargs", json.dumps(kwargs)]
        command += ["--holder", self.holder]
        return self.child(label or name.lower(), command)["result"]


def install_models(args: argparse.Namespace, night: Night) -> dict[str, Any]:
    """Copy the small world's two-tower, train and export the ranker, promote the served system."""
    from pipelines.core.lake import Lake
    from pipelines.core.model_settings import TWO_TOWER_RETRIEVER
    from pipelines.core.paths import RANKER, SYSTEM, TWO_TOWER, LakePaths
    from pipelines.serving.system import ServedSystem, served_system
    from pipelines.training import registry

    lake = Lake(str(Path(args.data_dir) / "lake"))
    two_tower = served_system(Lake(args.world_lake), args.ds, use_current=True).system.two_tower_version
    model = LakePaths.model_dir(TWO_TOWER, two_tower)
    if not lake.exists(f"{model}/config.json"):
        shutil.copytree(Path(Lake(args.world_lake).path(model)), Path(lake.path(model)))
    if args.ranker:
        if not lake.exists(f"{LakePaths.model_dir(RANKER, args.ranker)}/model.txt"):
            raise SystemExit(f"--ranker {args.ranker}: no such ranker in {lake.path(RANKER)}")
        ranker: dict[str, Any] = {"version": args.ranker, "trained": "earlier, by --train-ranker"}
    else:
        ranker = night.child("train_ranker", ["--train-ranker", "--two-tower", two_tower])
    system = ServedSystem(TWO_TOWER_RETRIEVER, two_tower, ranker["version"], retrieval_depth=args.depth)
    registry.promote(
        lake,
        SYSTEM,
        {"version": registry.new_version(args.ds, system.to_json()), "system": system.to_json()},
        registry.champion_version(lake, SYSTEM),
    )
    return {"system": system.label, "ranker": ranker}


def nightly(night: Night, num_shards: int) -> list[dict[str, Any]]:
    """export -> embed -> index -> candidate shards -> publish -> digest shards -> publish."""
    params = {"num_shards": num_shards}
    night.job("EXPORT_INPUTS", params)
    night.job("EMBED_ITEMS", params)
    night.job("BUILD_INDEX", params)
    plan = night.job("PLAN_SHARDS", params)
    shards = [night.job("CANDIDATES_FOR_SHARD", params, f"candidates shard {p['shard']}", **p) for p in plan]
    night.job("PUBLISH_CANDIDATES", params, staging=plan[0]["staging"], shard_results=shards)
    digest_plan = night.job("PLAN_DIGESTS", params)
    rendered = [night.job("RENDER_DIGESTS", params, f"digests shard {p['shard']}", **p) for p in digest_plan]
    night.job("PUBLISH_DIGESTS", params, staging=digest_plan[0]["staging"], shard_results=rendered)
    return shards


def report(night: Night, models: dict[str, Any], shards: list[dict[str, Any]]) -> None:
    print(f"\nserved system: {models['system']}; ranker {json.dumps(models['ranker'])}")
    print(f"{'step':<24}{'wall s':>9}{'CPU s':>9}{'CPU use':>9}{'peak':>10}{'load avg':>16}")
    cores = os.cpu_count() or 1
    total = 0.0
    for name, step in night.steps:
        use = step["cpu_seconds"] / step["wall_seconds"] / cores
        load = f"{step['loadavg'][0]:.2f} -> {step['loadavg'][1]:.2f}"
        print(
            f"{name:<24}{step['wall_seconds']:>9.1f}{step['cpu_seconds']:>9.1f}{use:>9.0%}"
            f"{gb(step['peak_memory']):>10}{load:>16}"
        )
        if name != "train_ranker":
            total += step["wall_seconds"]
    peak = max(step["peak_memory"] for name, step in night.steps if name != "train_ranker")
    print(
        f"nightly (export to digests published): {total / 60:.1f} min wall on one {cores}-core worker, "
        f"loads and start-ups included (target <= {TARGET_MINUTES} min); peak {gb(peak)} (target < "
        f"{gb(TARGET_MEMORY)})"
        + "".join(
            f"; train_ranker {step['wall_seconds'] / 60:.1f} min"
            for name, step in night.steps[:1]
            if name == "train_ranker"
        )
    )
    users = sum(s["users"] for s in shards)
    compute = sum(s["users"] / s["users_per_s"] for s in shards if s["users_per_s"])
    walls = sum(step["wall_seconds"] for name, step in night.steps if name.startswith("candidates shard"))
    print(
        f"candidates: {users:,} users, {users / compute:,.0f} users/s without loads, {users / walls:,.0f} "
        "users/s with them (process start-up included)"
    )
    for shard in shards:
        seconds = shard["seconds"]
        print(
            f"  shard {shard['shard']}: {shard['users']:,} users, "
            f"load_context {seconds['load_context']:.1f} s, load_users {seconds['load_users']:.1f} s, "
            f"{shard['users_per_s']:,.0f} users/s without loads"
        )


def compare_shards(night: Night, counts: list[int]) -> None:
    """The load of shard 0 when the day is exported again in each number of shards (the embeddings and
    the index do not depend on it)."""
    rows = []
    for count in counts:
        night.job("EXPORT_INPUTS", {"num_shards": count}, f"export_inputs ({count} shards)")
        loaded = night.child(f"load shard 0 of {count}", ["--load-shard", "--num-shards", str(count)])
        rows.append({"num_shards": count, **loaded})
    print(f"\n{'shards':>7}{'users in shard 0':>18}{'seen pairs':>12}{'load_users s':>14}", end="")
    print(f"{'per 100k users':>16}{'load avg':>16}")
    lines = [
        f"{row['num_shards']:>7}{row['users']:>18,}{row['seen_pairs']:>12,}"
        f"{row['seconds']['load_users']:>14.2f}{row['seconds']['load_users'] / row['users'] * 1e5:>16.2f}"
        f"{row['loadavg'][0]:>9.2f} -> {row['loadavg'][1]:.2f}"
        for row in rows
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="NIGHTFEED_DATA_DIR of the world with features")
    parser.add_argument("--world-lake", help="the small world's lake: its served two-tower is used")
    parser.add_argument("--ds", type=dt.date.fromisoformat, default=dt.date(2026, 11, 22))
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--compare-shards", type=int, nargs="*", default=[])
    parser.add_argument("--compare-only", action="store_true", help="only the shard comparison")
    parser.add_argument("--depth", type=int, default=500, help="the served system's retrieval depth")
    parser.add_argument("--ranker", help="serve this ranker of the lake instead of training one first")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--holder", help=argparse.SUPPRESS)
    parser.add_argument("--train-ranker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load-shard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-shards", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--two-tower", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        child_result(run_job(args))
        return
    if args.train_ranker:
        child_result(train_ranker(args))
        return
    if args.load_shard:
        child_result(load_shard(args))
        return
    if not args.world_lake and not args.compare_only:
        parser.error("--world-lake is required")
    os.environ["NIGHTFEED_DATA_DIR"] = args.data_dir
    night = Night(args)
    if not args.compare_only:
        models = install_models(args, night)
        report(night, models, nightly(night, args.shards))
    if args.compare_shards:
        compare_shards(night, args.compare_shards)


if __name__ == "__main__":
    main()
