"""ScaNN item index against exact search: build time, queries/s, recall@k and the machine's matmul speed.

    python bench/bench_scann.py --items 100000 1000000 --dim 64 --queries 2000

For each catalog size it draws clustered unit-norm embeddings (a mixture of gaussians, described in the
output), builds the index with the default ``IndexConfig`` (or the overrides given), and measures on the
same queries in the same run:

* ScaNN: ``ItemIndex.search_positions`` (batched over all cores);
* exact: ``pipelines.serving.exact_search.exact_top_k``, blocked BLAS sgemm + top-k selection with bounded
  memory;
* recall@k of ScaNN against the exact result, and the speed ratio;
* the sgemm part of the exact search alone, in GFLOP/s, next to the machine's peak estimates: a large
  square sgemm measured here, and cores x clock x FLOPs/cycle read from /proc/cpuinfo.

Timings are the best of interleaved rounds (exact, then each ScaNN setting), so load from other work on
the machine hits both sides alike. ``--fractions`` also searches the same index with other shares of
leaves (a per-query ScaNN setting, so no rebuild) to show the recall/speed trade-off. Printed figures,
not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import peak_memory

from pipelines.core.settings import IndexConfig
from pipelines.serving.exact_search import EXACT_BLOCK_BYTES, EXACT_ITEM_BLOCK, exact_top_k
from pipelines.serving.index import ItemIndex, build_scann_index
from pipelines.serving.vectors import normalize_queries


def clustered_embeddings(
    n: int, centres: np.ndarray, noise: float, zipf: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors from a mixture of gaussians around the unit vectors ``centres``, and their labels.

    Cluster ``c`` has weight proportional to ``(c + 1) ** -zipf`` (popular topics are bigger); a point is
    its centre plus ``noise * N(0, I / dim)`` (so the noise has expected norm ``noise``), normalised.
    """
    n_clusters, dim = centres.shape
    weights = (np.arange(1, n_clusters + 1, dtype=np.float64)) ** -zipf
    labels = rng.choice(n_clusters, size=n, p=weights / weights.sum())
    points = np.empty((n, dim), np.float32)
    chunk = 200_000
    for start in range(0, n, chunk):
        part = labels[start : start + chunk]
        noise_part = rng.standard_normal((len(part), dim), dtype=np.float32) * (noise / math.sqrt(dim))
        points[start : start + chunk] = centres[part] + noise_part
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points, labels


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page in, let thread pools start
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def blocked_sgemm_seconds(embeddings: np.ndarray, queries: np.ndarray, k: int, repeats: int) -> float:
    """The matrix products of ``exact_top_k`` alone, with its block sizes, no selection."""
    n = len(embeddings)
    item_block = max(EXACT_ITEM_BLOCK, k)
    query_block = max(1, EXACT_BLOCK_BYTES // (4 * min(n, item_block)))
    out = np.empty((query_block, min(n, item_block)), np.float32)

    def run() -> None:
        for q0 in range(0, len(queries), query_block):
            block = queries[q0 : q0 + query_block]
            for i0 in range(0, n, item_block):
                items = embeddings[i0 : i0 + item_block]
                np.matmul(block, items.T, out=out[: len(block), : len(items)])

    return best_seconds(run, repeats)


def cpu_peak_estimate() -> tuple[str, float | None, int, int | None]:
    """(cpu model, clock MHz, usable cores, fp32 FLOPs per cycle per core) from /proc/cpuinfo."""
    cores = len(os.sched_getaffinity(0))
    model, mhz, flags = platform.processor() or "unknown", None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                model = value
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    # fp32 FLOPs per cycle per core, assuming two FMA units of the widest vector width the flags show
    # (2 units x lanes x 2 FLOPs per FMA).
    if "avx512f" in flags:
        per_cycle = 2 * 16 * 2
    elif "fma" in flags and "avx2" in flags:
        per_cycle = 2 * 8 * 2
    elif flags:
        per_cycle = 2 * 4 * 2
    else:
        per_cycle = None
    return model, mhz, cores, per_cycle


def square_sgemm_gflops(size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    seconds = best_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(
        np.intersect1d(a[a >= 0], e, assume_unique=True).size for a, e in zip(approx, exact, strict=True)
    )
    return hits / exact.size


def bench_size(n: int, args: argparse.Namespace, config: IndexConfig) -> None:
    rng = np.random.default_rng(args.seed + n)
    started = time.perf_counter()
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    embeddings, labels = clustered_embeddings(n, centres, args.noise, args.zipf, rng)
    # Queries ("users") come from the same mixture as the items: each sits near one topic.
    queries, query_labels = clustered_embeddings(args.queries, centres, args.noise, args.zipf, rng)
    print(f"\n== {n:,} items x {args.dim} dims, {args.queries:,} queries, k={args.k}")
    print(f"data drawn in {time.perf_counter() - started:.1f} s")

    item_ids = np.char.add("item-", np.arange(n).astype(str))
    started = time.perf_counter()
    index = build_scann_index(item_ids, embeddings, config)
    build_seconds = time.perf_counter() - started
    settings = index.settings
    print(
        f"ScaNN build: {build_seconds:.1f} s  mode={settings.mode} num_leaves={settings.num_leaves} "
        f"leaves_to_search={settings.leaves_to_search} reorder={settings.reorder_for(args.k)} "
        f"(for k={args.k}) training_sample={settings.training_sample_size}"
    )
    del embeddings  # the index keeps its own normalised copy
    unit_queries = normalize_queries(queries, args.dim)

    fractions = sorted({config.leaves_to_search_fraction, *args.fractions})
    searches: list[tuple[str, int, Callable[[], tuple[np.ndarray, np.ndarray]]]] = []
    for fraction in fractions if settings.mode == "tree_ah" else [None]:
        if fraction is None:
            searches.append(("brute force", 0, lambda: index.search_positions(unit_queries, args.k)))
        else:
            leaves = max(1, min(settings.num_leaves, math.ceil(fraction * settings.num_leaves)))
            label = str(leaves) + (" (default)" if fraction == config.leaves_to_search_fraction else "")
            searches.append((label, leaves, _searcher_with_leaves(index, unit_queries, args.k, leaves)))

    # Rounds interleave the exact and the ScaNN timings, so load from other work on the machine hits both
    # alike; each figure is the best of its rounds.
    exact_pos, _ = exact_top_k(index.embeddings, unit_queries, args.k)
    for _, _, search in searches:
        search()  # warm-up
    exact_seconds = math.inf
    search_seconds = [math.inf] * len(searches)
    for round_ in range(max(args.repeats, args.exact_repeats)):
        if round_ < args.exact_repeats:
            exact_seconds = min(
                exact_seconds, _timed(lambda: exact_top_k(index.embeddings, unit_queries, args.k))
            )
        for i, (_, _, search) in enumerate(searches):
            search_seconds[i] = min(search_seconds[i], _timed(search))
    sgemm_seconds = blocked_sgemm_seconds(index.embeddings, unit_queries, args.k, args.exact_repeats)
    own_cluster = float((labels[exact_pos] == query_labels[:, None]).mean())
    print(f"share of the exact top-{args.k} in the query's own cluster: {own_cluster:.3f}")
    flops = 2.0 * n * args.dim * args.queries
    exact_qps = args.queries / exact_seconds
    print(
        f"exact (blocked sgemm + top-k): {exact_qps:,.0f} queries/s ({exact_seconds:.2f} s); "
        f"{flops / exact_seconds / 1e9:.0f} GFLOP/s end to end; its sgemm alone {sgemm_seconds:.2f} s = "
        f"{flops / sgemm_seconds / 1e9:.0f} GFLOP/s ({100 * sgemm_seconds / exact_seconds:.0f}% of the time)"
    )

    header = f"{'leaves searched':>16} {'share':>6} {'queries/s':>10} {f'recall@{args.k}':>10}"
    print(f"{header} {'vs exact':>9}")
    for (label, leaves, search), seconds in zip(searches, search_seconds, strict=True):
        positions, _ = search()
        qps = args.queries / seconds
        share = f"{leaves / settings.num_leaves:.3f}" if leaves else "1"
        recall = recall_at_k(positions, exact_pos)
        print(f"{label:>16} {share:>6} {qps:>10,.0f} {recall:>10.4f} {qps / exact_qps:>8.1f}x")
    print(f"peak memory so far (VmHWM): {peak_memory() / 2**20:,.0f} MiB; load {os.getloadavg()[0]:.1f}")


def _searcher_with_leaves(index: ItemIndex, queries: np.ndarray, k: int, leaves: int):
    reorder = index.settings.reorder_for(k)

    def run() -> tuple[np.ndarray, np.ndarray]:
        positions, scores = index.searcher.search_batched_parallel(
            queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder or None, leaves_to_search=leaves
        )
        positions = positions.astype(np.int64)
        positions[np.isnan(scores)] = -1
        return positions, scores

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=1000, help="gaussian components (topics)")
    parser.add_argument("--noise", type=float, default=0.7, help="expected norm of a point's offset")
    parser.add_argument("--zipf", type=float, default=0.5, help="cluster size skew exponent")
    parser.add_argument("--fractions", type=float, nargs="*", default=[], help="extra leaf shares")
    parser.add_argument("--leaves-per-sqrt-items", type=float)
    parser.add_argument("--leaves-to-search-fraction", type=float)
    parser.add_argument("--reorder-multiplier", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    overrides = {
        name: getattr(args, name)
        for name in ("leaves_per_sqrt_items", "leaves_to_search_fraction", "reorder_multiplier")
        if getattr(args, name) is not None
    }
    config = IndexConfig(**overrides)
    model, mhz, cores, per_cycle = cpu_peak_estimate()
    print(
        f"machine: {model}, {cores} cores usable, cpu MHz {mhz}; numpy {np.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure below)"
    )
    print(f"index config: {config.model_dump()}")
    print(
        f"data: {args.clusters} gaussian clusters, centres uniform on the unit sphere, weights ~ "
        f"(rank)^-{args.zipf}; point = centre + {args.noise} * N(0, I/{args.dim}), then L2-normalised. "
        f"Queries drawn the same way (independent draws). Cosine of a point to its centre is about "
        f"{1 / math.sqrt(1 + args.noise**2):.2f}."
    )
    gflops = square_sgemm_gflops(4096, 3)
    theoretical = cores * mhz / 1000 * per_cycle if mhz and per_cycle else None
    print(
        f"peak estimates: measured 4096^3 sgemm {gflops:.0f} GFLOP/s; theoretical "
        + (
            f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle = {theoretical:.0f} GFLOP/s "
            "(assumes 2 FMA units of the widest vector width in the cpu flags, base clock)"
            if theoretical
            else "unknown (no /proc/cpuinfo)"
        )
    )
    for n in args.items:
        bench_size(n, args, config)
    print(f"\nsquare sgemm again after the runs: {square_sgemm_gflops(4096, 3):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
