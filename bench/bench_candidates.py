"""Per-user candidates at scale: users/s per stage with and without loads, peak memory, ScaNN against exact
retrieval and against the machine's sgemm bound.

    python bench/bench_candidates.py --users 1000000 --items 1000000 --dim 64 --world-lake LAKE

What runs is the real shard task, :func:`pipelines.serving.shards.candidates_for_shard` (load the context
and the shard's inputs, user tower, ScaNN top-N, filters, LightGBM, diversify, assemble, list checks,
Parquet write), on one shard of a synthetic day (:mod:`synthetic_day`) published into a lake of its own,
in a child process per measurement so that each peak memory is a shard worker's own (``VmHWM``). The same
shard then runs again with the ScaNN index swapped for exact search
(:func:`pipelines.serving.exact_search.exact_top_k`: blocked matmul + argpartition over all items), so the
ratio is visible in one run; the child also measures the sgemm rate of the machine right after the shard,
which bounds what any exact search can do. The served system is promoted in the bench lake's registry:
the small world's two-tower, a LightGBM ranker, diversification, retrieval to ``--depth``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import child_result, gb, log, resident_memory, run_child, sgemm_gflops

from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, SYSTEM, TWO_TOWER, LakePaths
from pipelines.core.settings import Settings

STAGES = ("prepare", "embed_users", "retrieve", "filter", "rank", "diversify", "assemble", "check", "write")
LOADS = ("load_context", "load_users")
WORLD_VERSION = 4  # bump when the synthetic day changes, so a cached lake is rebuilt


# -- the day and its served system -----------------------------------------------------------------------
def _publish(lake: Lake, dataset: str, files: dict[str, pa.Table], metadata: dict[str, Any]) -> None:
    staging = lake.begin_publish(dataset)
    for name, table in files.items():
        lake.write_parquet(f"{staging}/{name}", table)
    lake.publish(dataset, staging, list(files), metadata=metadata)


def build_day(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Publish the synthetic day into ``work/lake`` (inputs per shard, embeddings, index); return facts."""
    from synthetic_day import (
        read_real_world,
        synthetic_interactions,
        synthetic_items,
        synthetic_seen,
        synthetic_users,
    )

    from pipelines.core.settings import IndexConfig
    from pipelines.serving.embeddings import EMBEDDINGS_FILE
    from pipelines.serving.index_store import build_and_publish_index
    from pipelines.serving.inputs import shard_parts
    from pipelines.training.two_tower import load_towers

    source = Lake(args.world_lake)
    real = read_real_world(source, args.ds)
    two_tower = real["system"].two_tower_version
    dim = real["vectors"].shape[1]
    if dim != args.dim:
        raise SystemExit(f"--dim {args.dim}: the small world's two-tower embeds in {dim} dimensions")
    rng = np.random.default_rng(args.seed)
    if work.exists():
        shutil.rmtree(work)
    lake_dir = work / "lake"
    lake = Lake(str(lake_dir))
    model = LakePaths.model_dir(TWO_TOWER, two_tower)
    shutil.copytree(Path(source.path(model)), lake_dir / model)

    started = time.perf_counter()
    catalog, vectors, parent = synthetic_items(real, args.items, args.noise, args.ds, rng)
    users, copied = synthetic_users(real, catalog, args.users, rng)
    seen = synthetic_seen(real, catalog, parent, users, copied, args.seen_per_user, rng)
    interactions = synthetic_interactions(seen, args.ds, rng)
    log(
        f"synthetic day: {catalog.num_rows:,} posts, {users.num_rows:,} users, {seen.num_rows:,} seen pairs "
        f"in {time.perf_counter() - started:.0f} s"
    )
    profiles = users.select(["user_id", "language", "selected_tags", "blocked_tags", "blocked_sources"])
    inputs = {"users": users, "seen": seen, "profiles": profiles, "interactions": interactions}
    files = {LakePaths.input_file("items"): catalog}
    for name, table in inputs.items():
        for shard, part in enumerate(shard_parts(table, args.num_shards)):
            files[LakePaths.input_file(name, shard)] = part
    rows = {name: table.num_rows for name, table in {**inputs, "items": catalog}.items()}
    _publish(lake, LakePaths.inputs(args.ds), files, {"rows": rows, "num_shards": args.num_shards})
    embeddings = pa.table(
        {
            "item_id": catalog.column("item_id"),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )
    _publish(
        lake,
        LakePaths.embeddings(args.ds),
        {EMBEDDINGS_FILE: embeddings},
        {"model_version": two_tower, "n_items": catalog.num_rows, "dim": dim},
    )
    towers = load_towers(lake, two_tower)
    sample = np.sort(rng.choice(users.num_rows, min(1000, users.num_rows), replace=False))
    queries = towers.embed_users(users.take(pa.array(sample)))
    started = time.perf_counter()
    report = build_and_publish_index(lake, args.ds, embeddings, queries, IndexConfig())
    log(
        f"index: {report.settings['mode']}, recall@{report.recall_k} {report.recall:.4f}, built in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return {
        "items": catalog.num_rows,
        "users": users.num_rows,
        "seen_pairs": seen.num_rows,
        "two_tower_version": two_tower,
        "index": report.settings,
        "index_recall": report.recall,
        "index_build_seconds": round(report.build_seconds, 1),
    }


def install_system(args: argparse.Namespace, work: Path, day: dict[str, Any]) -> dict[str, Any]:
    """Export the ranker asked for (unless it already is) and promote the served system of the bench
    lake: the two-tower, that ranker, diversification, retrieval to ``--depth`` (blended with the day's
    most popular posts at ``--blend-popular``, or with ALS at ``--blend-als``, if given).

    ``--ranker-trees 0`` copies the small world's ranker (its served system must have one); ``N`` trains a
    synthetic one.
    """
    from synthetic_day import synthetic_ranker

    from pipelines.core.model_settings import ALS_RETRIEVER, POPULAR_RETRIEVER, TWO_TOWER_RETRIEVER
    from pipelines.serving.inputs import read_input
    from pipelines.serving.system import ServedSystem, served_system
    from pipelines.training import registry

    lake = Lake(str(work / "lake"))
    facts_file = work / "ranker.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    if facts.get("trees_asked") != args.ranker_trees:
        shutil.rmtree(work / "lake" / "models" / RANKER, ignore_errors=True)
        if args.ranker_trees == 0:
            version = served_system(Lake(args.world_lake), args.ds, use_current=True).system.ranker_version
            if version is None:
                raise SystemExit("the small world serves no ranker: use --ranker-trees N")
            model = LakePaths.model_dir(RANKER, version)
            shutil.copytree(Path(Lake(args.world_lake).path(model)), work / "lake" / model)
            config = lake.read_json(f"{model}/config.json")
            facts = {"version": version, "trees": config["num_trees"], "origin": "the small world's ranker"}
        else:
            catalog, users = read_input(lake, args.ds, "items"), read_input(lake, args.ds, "users")
            rng = np.random.default_rng(args.seed + 1)
            facts = synthetic_ranker(lake, catalog, users, args.ds, args.ranker_trees, rng)
            facts["origin"] = (
                f"trained on synthetic labelled rows of the day (eval NDCG@10 {facts['ndcg_at_10']})"
            )
        facts["trees_asked"] = args.ranker_trees
        facts_file.write_text(json.dumps(facts))
    blend: dict[str, Any] = {}
    if args.blend_popular:
        blend = {"blend_retriever": POPULAR_RETRIEVER, "blend_weight": args.blend_popular}
        blend["popularity_window_days"] = 1
    if args.blend_als:
        blend = {"blend_retriever": ALS_RETRIEVER, "blend_weight": args.blend_als}
        blend["als_version"] = als_model(args, work)
    system = ServedSystem(
        TWO_TOWER_RETRIEVER, day["two_tower_version"], facts["version"], retrieval_depth=args.depth, **blend
    )
    current = registry.champion_version(lake, SYSTEM)
    version = registry.new_version(args.ds, system.to_json())
    registry.promote(
        lake, SYSTEM, {"version": version, "system": system.to_json(), "label": system.label}, current
    )
    log(f"served system: {system.label}; ranker {facts['trees']} trees, {facts['origin']}")
    return {**facts, "label": system.label}


def als_model(args: argparse.Namespace, work: Path) -> str:
    """The version of an ALS model trained on the day's interactions (exported once per bench lake and
    number of factors)."""
    from pipelines.serving.inputs import read_input
    from pipelines.training import registry
    from pipelines.training.als import AlsParams, save_als, train_als
    from pipelines.training.interactions import interaction_matrix

    facts_file = work / "als.json"
    trained = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    if str(args.als_factors) in trained:
        return trained[str(args.als_factors)]
    lake = Lake(str(work / "lake"))
    interactions = read_input(lake, args.ds, "interactions")
    items = interactions.column("item_id").unique().sort()
    matrix = interaction_matrix(interactions, items)
    started = time.perf_counter()
    params = AlsParams(factors=args.als_factors)
    model = train_als(matrix.counts, items, params)
    norms = np.linalg.norm(model.item_factors, axis=1)
    log(
        f"ALS f={args.als_factors}: {matrix.counts.shape[0]:,} users x {len(items):,} posts, "
        f"{matrix.counts.nnz:,} engagements, trained in {time.perf_counter() - started:.0f} s; "
        f"factor norms 5/50/95%: {np.percentile(norms, [5, 50, 95]).round(3).tolist()}"
    )
    version = registry.new_version(args.ds, {"kind": "als", "factors": args.als_factors})
    save_als(model, lake, version)
    facts_file.write_text(json.dumps({**trained, str(args.als_factors): version}))
    return version


# -- one shard, in a child process -----------------------------------------------------------------------
def use_exact_search(lake: Lake, ds: dt.date) -> None:
    """Make :func:`pipelines.serving.context.load_context` search exactly instead of with ScaNN."""
    import pipelines.serving.index_store as index_store
    from pipelines.serving.embeddings import read_embeddings
    from pipelines.serving.exact_search import exact_top_k
    from pipelines.serving.vectors import embeddings_from_table, normalize_queries

    scann_index = index_store.load_index

    class ExactIndex:
        def __init__(self, loaded: Any) -> None:
            table, _ = read_embeddings(lake, ds)
            _, vectors = embeddings_from_table(table)
            self.item_ids, self.settings = loaded.item_ids, loaded.settings
            self.embeddings = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            queries = normalize_queries(queries, self.settings.dim)
            return exact_top_k(self.embeddings, queries, k)

    index_store.load_index = lambda lake_, rel: ExactIndex(scann_index(lake_, rel))


def context_size(lake: Lake, ds: dt.date, settings: Settings) -> dict[str, Any]:
    """Bytes held by the serving context: arrays and tables, and the resident memory it added."""
    from pipelines.serving.context import load_context
    from pipelines.serving.system import served_system

    system = served_system(lake, ds, settings.use_current_system).system
    before = resident_memory()
    ctx = load_context(lake, ds, settings, system, 0, 1)
    after = resident_memory()
    arrays = {
        name: value.nbytes
        for name, value in vars(ctx).items()
        if isinstance(value, np.ndarray) and value.dtype != object
    }
    strings = sum(sys.getsizeof(s) for s in ctx.item_ids) + ctx.item_ids.nbytes
    return {
        "rss_added": after - before,
        "items_table": ctx.items.nbytes,
        "item_ids_objects": strings,
        "numeric_arrays": sum(arrays.values()),
        "item_vectors": arrays.get("item_vectors", 0),
        "als": als_search(ctx.retriever),
    }


def als_search(retriever: Any) -> dict[str, Any] | None:
    """How the served ALS retriever (alone or blended) searches: the tree the index stage published (its
    mode and recall) or exact search."""
    from pipelines.serving.retrievers import AlsRetriever

    found = [r for r in (retriever, *vars(retriever).values()) if isinstance(r, AlsRetriever)]
    if not found:
        return None
    index = found[0].index
    return {
        "posts": len(found[0].factors),
        "mode": index.settings.mode if index else "exact",
        "recall": index.recall if index else None,
    }


def index_stage(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run the real index stage for the installed system (it also builds the tree over the ALS post
    factors of a blend with ALS, once for every shard) and return its result."""
    from pipelines.core.settings import CandidatesConfig
    from pipelines.serving.index_store import index_items

    settings = Settings(
        data_dir=work, lake=str(work / "lake"), candidates=CandidatesConfig(num_shards=args.num_shards)
    )
    started = time.perf_counter()
    result = index_items(Lake(settings.lake_url), args.ds, settings)
    log(f"index stage for the served system in {time.perf_counter() - started:.0f} s: {result.get('als')}")
    return result


def serve_shard(args: argparse.Namespace) -> dict[str, Any]:
    """Run the real shard task once and return its result, then measure the sgemm rate."""
    from pipelines.serving.shards import candidates_for_shard

    work = Path(args.work_dir)
    lake = Lake(str(work / "lake"))
    settings = Settings(data_dir=work, lake=str(work / "lake"))
    if args.serve == "context":
        return context_size(lake, args.ds, settings)
    if args.serve == "exact":
        use_exact_search(lake, args.ds)
    staging = lake.begin_publish(LakePaths.candidates(args.ds))
    if args.profile:
        # Imports out of the profile: they are paid once per worker, not per user.
        import lightgbm  # noqa: F401
        import scann  # noqa: F401

        import pipelines.serving.diversify
        import pipelines.serving.index_store
        import pipelines.training.ranker
        import pipelines.training.two_tower  # noqa: F401
    profiler = cProfile.Profile() if args.profile else None
    with profiler or contextlib.nullcontext():
        result = candidates_for_shard(lake, args.ds, args.shard, args.num_shards, staging, settings)
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        log(out.getvalue())
    result["path"] = lake.path(f"{staging}/{result['file']}")
    result["sgemm_gflops"] = round(sgemm_gflops(args.dim), 1)
    return result


def shard_run(args: argparse.Namespace, mode: str, profile: int = 0) -> dict[str, Any]:
    command = [__file__, "--serve", mode, "--work-dir", args.work_dir, "--ds", args.ds.isoformat()]
    command += ["--shard", str(args.shard), "--num-shards", str(args.num_shards), "--profile", str(profile)]
    return run_child([*command, "--dim", str(args.dim)])


# -- report ----------------------------------------------------------------------------------------------
def overlap(a_path: str, b_path: str) -> float:
    """Share of the (user, post) rows of file ``a`` that file ``b`` also has."""
    import pyarrow.parquet as pq

    a = pq.read_table(a_path, columns=["user_id", "item_id"])
    b = pq.read_table(b_path, columns=["user_id", "item_id"])
    key_a = pc.binary_join_element_wise(a.column("user_id"), a.column("item_id"), "|")
    key_b = pc.binary_join_element_wise(b.column("user_id"), b.column("item_id"), "|")
    return float(pc.mean(pc.is_in(key_a, value_set=key_b.combine_chunks())).as_py())


def report(
    args: argparse.Namespace, day: dict[str, Any], runs: dict[str, dict[str, Any]], ctx: dict[str, Any]
) -> None:
    n_users = runs["scann"]["users"]
    index = day["index"]
    print(
        f"\ncandidates of one shard: {n_users:,} users (shard {args.shard} of {args.num_shards}) over "
        f"{day['items']:,} posts; the day has {day['users']:,} users and {day['seen_pairs']:,} seen pairs; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"index: {index['mode']}, {index['num_leaves']} leaves, {index['leaves_to_search']} searched, "
        f"reorder x{index['reorder_multiplier']}, recall@100 {day['index_recall']:.4f} "
        f"(built in {day['index_build_seconds']} s)"
    )
    print(
        f"system: {day['system']['label']}; ranker {day['system']['trees']} trees, {day['system']['origin']}"
    )
    header = f"{'stage':<13}" + "".join(f"{m + ' s':>11}{m + ' users/s':>17}" for m in runs)
    print(header + "\n" + "-" * len(header))
    for stage in (*LOADS, *STAGES):
        cells = ""
        for run in runs.values():
            seconds = run["seconds"].get(stage, 0.0)
            rate = f"{n_users / seconds:,.0f}" if seconds and stage not in LOADS else "-"
            cells += f"{seconds:>11.2f}{rate:>17}"
        print(f"{stage:<13}{cells}")
    print("-" * len(header))
    serve = {mode: sum(run["seconds"].get(s, 0.0) for s in STAGES) for mode, run in runs.items()}
    loaded = {mode: run["wall_seconds"] for mode, run in runs.items()}
    print(f"{'without loads':<13}" + "".join(f"{t:>11.2f}{n_users / t:>17,.0f}" for t in serve.values()))
    print(f"{'with loads*':<13}" + "".join(f"{t:>11.2f}{n_users / t:>17,.0f}" for t in loaded.values()))
    for stage in ("embed_users", "retrieve"):
        cells = ""
        for run in runs.values():
            busy = run.get("overlapped_seconds", {}).get(stage, 0.0)
            cells += f"{busy:>11.2f}{n_users / busy if busy else 0:>17,.0f}"
        print(f"{stage + '**':<13}{cells}")
    print("*  the child process's wall time: interpreter start, imports, loads, every stage")
    print("** busy time of the next batch's user tower and retrieval, run ahead in a background thread;")
    print("   the table above counts only the time the pipeline waited for them")
    for key, label in (("peak_memory", "peak memory"), ("cpu_seconds", "CPU s")):
        cells = "".join(f"{gb(r[key]) if key == 'peak_memory' else r[key]:>28}" for r in runs.values())
        print(f"{label:<13}{cells}")
    print(
        f"{'CPU use':<13}"
        + "".join(f"{r['cpu_seconds'] / r['wall_seconds'] / os.cpu_count():>27.0%} " for r in runs.values())
        + f"of {os.cpu_count()} cores over the child's wall time"
    )
    print(
        f"{'load avg':<13}"
        + "".join(f"{r['loadavg'][0]:>20.2f} -> {r['loadavg'][1]:.2f}" for r in runs.values())
    )
    for mode, run in runs.items():
        busy = run.get("overlapped_seconds", {}).get("retrieve") or run["seconds"]["retrieve"]
        bound = run["sgemm_gflops"] * 1e9 / (2.0 * day["items"] * args.dim)
        print(
            f"retrieve ({mode}): {n_users / busy:,.0f} queries/s; sgemm runs at {run['sgemm_gflops']:.0f} "
            f"GFLOP/s in the same process, so no exact search passes {bound:,.0f} queries/s here "
            f"({n_users / busy / bound:.1f}x that bound)"
        )
    for mode in runs:
        shards = round(day["users"] / n_users)
        print(
            f"{mode}: {day['users']:,} users at {n_users / serve[mode]:,.0f} users/s (embed to write) take "
            f"{day['users'] / n_users * serve[mode] / 60:.1f} min; as {shards} shards of this size on one "
            f"2-core worker, with every load and start-up: {shards * loaded[mode] / 60:.1f} min"
        )
    if "exact" in runs:
        busy = {
            m: r.get("overlapped_seconds", {}).get("retrieve") or r["seconds"]["retrieve"]
            for m, r in runs.items()
        }
        shared = overlap(runs["scann"]["path"], runs["exact"]["path"])
        print(
            f"retrieve: exact takes {busy['exact'] / busy['scann']:.1f}x ScaNN's time; "
            f"{shared:.3f} of the final rows are the same"
        )
    if ctx["als"]:
        als = ctx["als"]
        recall = f"recall@100 {als['recall']:.4f}" if als["recall"] is not None else "no index"
        built = day.get("index_stage", {}).get("als", {}).get("build_seconds")
        print(
            f"ALS retrieval: {als['mode']} over {als['posts']:,} posts with factors, {recall}; built and "
            f"checked once by the index stage in {built} s"
        )
    print(
        f"serving context: +{gb(ctx['rss_added'])} resident (items table {gb(ctx['items_table'])}, item id "
        f"strings {gb(ctx['item_ids_objects'])}, numeric arrays {gb(ctx['numeric_arrays'])} of which "
        f"vectors {gb(ctx['item_vectors'])}; the rest is ScaNN, the models and the allocator)"
    )


def main(argv: list[str] | None = None) -> None:
    from pipelines.core.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64, help="must be the small world's embedding size")
    parser.add_argument("--sample", type=int, default=20_000, help="users in the measured shard (about)")
    parser.add_argument("--depth", type=int, default=500, help="the served system's retrieval depth")
    parser.add_argument(
        "--blend-popular",
        type=float,
        default=0.0,
        help="serve the two-tower blended with most popular (1-day window) at this weight (0: no blend)",
    )
    parser.add_argument(
        "--blend-als",
        type=float,
        default=0.0,
        help="serve the two-tower blended with ALS (trained on the day's interactions) at this weight",
    )
    parser.add_argument("--als-factors", type=int, default=16, help="ALS factors for --blend-als")
    parser.add_argument("--seen-per-user", type=float, default=30.0)
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the noise around a parent")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--ranker-trees",
        type=int,
        default=200,
        help="boosting rounds of the synthetic ranker; 0 uses the small world's ranker",
    )
    parser.add_argument("--world-lake", default=None, help="the small world's lake (default: settings)")
    parser.add_argument(
        "--ds", type=dt.date.fromisoformat, default=dt.date(2026, 11, 22), help="run date of the small world"
    )
    parser.add_argument("--work-dir", default="/tmp/nightfeed-bench-candidates")
    parser.add_argument("--no-exact", action="store_true", help="skip the exact-retrieval baseline")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions of the ScaNN run")
    parser.add_argument("--serve", choices=["scann", "exact", "context"], help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num-shards", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        child_result(serve_shard(args))
        return

    args.world_lake = args.world_lake or load_settings().lake_url
    args.num_shards = max(1, round(args.users / args.sample))
    work = Path(args.work_dir)
    keys = ("users", "items", "dim", "seen_per_user", "noise", "seed", "world_lake", "ds", "num_shards")
    params = {key: getattr(args, key) for key in keys} | {"version": WORLD_VERSION}
    facts_file = work / "day.json"
    cached = json.loads(facts_file.read_text()) if facts_file.exists() else None
    if cached and cached["params"] == json.loads(json.dumps(params, default=str)):
        day = cached["day"]
        log(f"reusing the synthetic day in {work}")
    else:
        day = build_day(args, work)
        facts_file.write_text(json.dumps({"params": params, "day": day}, default=str))
    day["system"] = install_system(args, work, day)
    if args.blend_als:
        day["index_stage"] = index_stage(args, work)
    runs = {"scann": shard_run(args, "scann", args.profile)}
    if not args.no_exact:
        runs["exact"] = shard_run(args, "exact")
    report(args, day, runs, run_child([__file__, "--serve", "context", "--work-dir", args.work_dir]))


if __name__ == "__main__":
    main()
