"""Per-user candidates at scale: users/s per stage, peak memory, ScaNN against exact retrieval.

    python bench/bench_candidates.py --users 1000000 --items 1000000 --dim 64

What runs is the real shard task, :func:`pipelines.serving.shards.candidates_for_shard` (load
context, user tower, ScaNN top-N, filters, LightGBM, diversify, assemble, list checks, Parquet write),
on one shard of a synthetic day published into a lake of its own, in a child process per measurement
so that each peak RSS is that of a shard worker alone. The same shard then runs again with the ScaNN
index swapped for exact
search (:func:`pipelines.serving.exact_search.exact_top_k`: blocked matmul + argpartition over all items), so
the ratio is visible in one run.

The synthetic day (``--items`` posts, ``--users`` users) is grown from a real small world, the one
``python -m pipelines world`` makes, trained and served (see ``bench/README.md``):

* user tower: the champion two-tower of that world, used as it is, so user-tower inference is real
  TensorFlow work on real histories (option (b): users whose histories use the model's vocabulary);
* ranker: a LightGBM lambdarank model trained by :func:`pipelines.training.ranker.train_ranker` on labelled
  rows drawn from the synthetic day, up to ``--ranker-trees`` rounds (200, the default config's maximum), and
  promoted through the registry: the scoring cost of a production-sized model. ``--ranker-trees 0`` uses
  the small world's champion instead, which early stopping keeps to a handful of trees;
* catalog: the real eligible posts plus variants of them. A variant copies its parent's tags, title,
  summary, types and language, takes the parent's source 60% of the time (else one of ``items / 400``
  sources) and one of ``items / 20`` authors; ages are uniform over the 30-day window and popularity is
  heavy-tailed. Its embedding is the parent's real item-tower embedding plus gaussian noise of norm
  ``--noise``, normalised: clusters around real posts, so real user queries find real neighbourhoods;
* users: each copies a real user's history, selected and affinity tags and language (account age and
  activity jittered); 10% block one tag and 5% block one source;
* seen: about ``--seen-per-user`` posts per user, the catalog posts of the history plus variants of their
  parents (the neighbourhood the user's query lands in, so the seen filter has real work).

The index is built by :func:`pipelines.serving.index.build_scann_index` with the default ``IndexConfig`` and
published with its recall check on 1,000 real user queries. The lake is kept in ``--work-dir`` and
reused while the parameters are unchanged. Printed figures, not a test.
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
import resource
import shutil
import subprocess
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

from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, TWO_TOWER, LakePaths
from pipelines.core.settings import Settings

STAGES = ("prepare", "embed_users", "retrieve", "filter", "rank", "diversify", "assemble", "check", "write")
MAX_AGE_DAYS = 30.0
BLOCK_TAG_SHARE = 0.10
BLOCK_SOURCE_SHARE = 0.05
WORLD_VERSION = 3  # bump when the synthetic day changes, so a cached lake is rebuilt


# -- the synthetic day -----------------------------------------------------------------------------------
def read_real_world(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """The small world's serving inputs, item embeddings and champion versions.

    Raises:
        SystemExit: the small world has not been trained and served yet (says which commands to run).
    """
    from pipelines.serving.embeddings import read_embeddings
    from pipelines.serving.inputs import read_input
    from pipelines.training.registry import champion_version

    versions = {kind: champion_version(lake, kind) for kind in (TWO_TOWER, RANKER)}
    if None in versions.values() or not lake.is_published(LakePaths.embeddings(ds)):
        raise SystemExit(
            f"{lake.uri('')} has no trained and served small world for ds={ds} (champions {versions}); "
            "make it with the commands in bench/README.md"
        )
    items = read_input(lake, ds, "items")
    embeddings, version = read_embeddings(lake, ds)
    if embeddings.column("item_id").to_pylist() != items.column("item_id").to_pylist():
        raise SystemExit(f"ds={ds}: the embeddings do not follow the items input row by row")
    flat = embeddings.column("embedding").combine_chunks().flatten().to_numpy()
    return {
        "items": items,
        "users": read_input(lake, ds, "users"),
        "vectors": flat.reshape(items.num_rows, -1).astype(np.float32),
        "two_tower_version": version,
    }


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _single_or_empty(rng: np.random.Generator, n: int, share: float, vocabulary: list[str]) -> pa.Array:
    """A list column where ``share`` of the rows hold one random word of ``vocabulary``, the rest none."""
    has = rng.random(n) < share
    offsets = np.concatenate([[0], np.cumsum(has)])
    words = np.asarray(vocabulary, dtype=object)[rng.integers(0, len(vocabulary), int(has.sum()))]
    return _lists(offsets, pa.array(words.tolist(), pa.string()))


def synthetic_items(
    real: dict[str, Any], n_items: int, noise: float, ds: dt.date, rng: np.random.Generator
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The catalog (columns of ``sql/serving/items.sql``, ordered by id), its embeddings and parents."""
    items, vectors = real["items"], real["vectors"]
    n_real = min(items.num_rows, n_items)
    n_var = n_items - n_real
    weights = (rng.permutation(items.num_rows) + 1.0) ** -0.5
    parent = np.concatenate(
        [np.arange(n_real), rng.choice(items.num_rows, size=n_var, p=weights / weights.sum())]
    )
    ids = np.concatenate([np.asarray(items.column("item_id").to_pylist()[:n_real], object), _ids("v", n_var)])
    if not (ids[:-1] < ids[1:]).all():
        raise SystemExit("the small world's items input is not ordered by item_id")
    n_sources, n_authors = max(5, n_items // 400), max(5, n_items // 20)
    own_source = rng.random(n_items) < 0.6
    source = pc.if_else(
        pa.array(own_source),
        items.column("source").combine_chunks().take(pa.array(parent)),
        pa.array(_ids("source-", n_sources)[rng.integers(0, n_sources, n_items)].tolist(), pa.string()),
    )
    author = pa.array(_ids("author-", n_authors)[rng.integers(0, n_authors, n_items)].tolist(), pa.string())
    age = np.concatenate(
        [items.column("item_age_days").to_numpy()[:n_real], rng.random(n_var) * MAX_AGE_DAYS]
    )
    end = np.datetime64(ds) + np.timedelta64(1, "D")
    created = end - (age * 86400e6).astype("timedelta64[us]")
    impressions = np.floor(rng.pareto(1.2, n_items) * 30 * np.minimum(age, 7) / 7).astype(np.int64)
    engagements_short = rng.binomial(impressions, rng.beta(2, 20, n_items))
    engagements_lookback = engagements_short + rng.poisson(2.0 * np.minimum(age, 30) / 30, n_items)
    source_ctr, author_ctr = rng.beta(4, 30, n_sources), rng.beta(3, 25, n_authors)
    parent_arr = pa.array(parent)
    catalog = pa.table(
        {
            "item_id": pa.array(ids.tolist(), pa.string()),
            "title": items.column("title").combine_chunks().take(parent_arr),
            "summary": items.column("summary").combine_chunks().take(parent_arr),
            "tags": items.column("tags").combine_chunks().take(parent_arr),
            "source": source,
            "author": author,
            "post_type": items.column("post_type").combine_chunks().take(parent_arr),
            "content_type": items.column("content_type").combine_chunks().take(parent_arr),
            "language": items.column("language").combine_chunks().take(parent_arr),
            "url": pa.array([f"https://posts.example/{i}" for i in ids], pa.string()),
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
            "item_age_days": age,
            "impressions_short": impressions,
            "engagements_short": engagements_short.astype(np.int64),
            "engagements_lookback": engagements_lookback.astype(np.int64),
            "ctr_short": engagements_short / np.maximum(impressions, 1),
            "source_ctr_lookback": source_ctr[rng.integers(0, n_sources, n_items)],
            "author_ctr_lookback": author_ctr[rng.integers(0, n_authors, n_items)],
        }
    )
    points = vectors[parent] + rng.standard_normal((n_items, vectors.shape[1]), np.float32) * np.float32(
        noise / np.sqrt(vectors.shape[1])
    )
    points[:n_real] = vectors[:n_real]
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return catalog, points, parent


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(7, len(str(n)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def synthetic_users(
    real: dict[str, Any], catalog: pa.Table, n_users: int, rng: np.random.Generator
) -> tuple[pa.Table, np.ndarray]:
    """Users (columns of ``sql/serving/users.sql``, ordered by id) and the real user each one copies."""
    users = real["users"]
    model = rng.integers(0, users.num_rows, n_users)
    take = pa.array(model)
    tags = sorted(set(pc.list_flatten(catalog.column("tags")).unique().to_pylist()))
    sources = catalog.column("source").unique().to_pylist()

    def copied(name: str) -> pa.Array:
        return users.column(name).combine_chunks().take(take)

    def jittered(name: str) -> np.ndarray:
        values = users.column(name).to_numpy().astype(np.float64)[model]
        return values * rng.uniform(0.5, 1.5, n_users)

    table = pa.table(
        {
            "user_id": pa.array(_ids("b", n_users).tolist(), pa.string()),
            "language": copied("language"),
            "selected_tags": copied("selected_tags"),
            "blocked_tags": _single_or_empty(rng, n_users, BLOCK_TAG_SHARE, tags),
            "blocked_sources": _single_or_empty(rng, n_users, BLOCK_SOURCE_SHARE, sources),
            "history": copied("history"),
            "account_age_days": jittered("account_age_days"),
            "activity_lookback": np.round(jittered("activity_lookback")).astype(np.int64),
            "activity_short": np.round(jittered("activity_short")).astype(np.int64),
            "ctr_lookback": copied("ctr_lookback"),
            "affinity_tags": copied("affinity_tags"),
            "affinity_weights": copied("affinity_weights"),
        }
    )
    return table, model


def synthetic_seen(
    real: dict[str, Any],
    catalog: pa.Table,
    parent: np.ndarray,
    users: pa.Table,
    model: np.ndarray,
    per_user: float,
    rng: np.random.Generator,
) -> pa.Table:
    """Distinct ``(user_id, item_id)`` pairs ordered like ``sql/serving/seen.sql``: history posts in the
    catalog plus variants of their parents, ``per_user`` on average (Poisson)."""
    n_items, n_users = catalog.num_rows, users.num_rows
    real_users = real["users"]
    row_of_id = {it: j for j, it in enumerate(real["items"].column("item_id").to_pylist())}
    # Per real user: rows of its history posts that are in the catalog (the real posts are rows 0..n_real).
    history_rows = [
        np.array([row_of_id[i] for i in (h or []) if row_of_id.get(i, n_items) < n_items], np.int64)
        for h in real_users.column("history").to_pylist()
    ]
    lengths = np.array([len(h) for h in history_rows])
    flat_history = np.concatenate([*history_rows, np.zeros(0, np.int64)])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    order = np.argsort(parent, kind="stable")
    child_start = np.searchsorted(parent[order], np.arange(len(real["items"])))
    child_count = np.bincount(parent, minlength=len(real["items"]))

    own = lengths[model]
    wanted = np.maximum(rng.poisson(per_user, n_users), own)
    extra = wanted - own
    user_of_extra = np.repeat(np.arange(n_users), extra)
    has_history = own[user_of_extra] > 0
    pick = starts[model[user_of_extra]] + np.floor(
        rng.random(len(user_of_extra)) * own[user_of_extra]
    ).astype(np.int64)
    around = np.where(
        has_history,
        flat_history[np.minimum(pick, len(flat_history) - 1)],
        rng.integers(0, len(child_count), len(user_of_extra)),
    )
    child = order[
        child_start[around] + np.floor(rng.random(len(around)) * child_count[around]).astype(np.int64)
    ]
    user_of_own = np.repeat(np.arange(n_users), own)
    within = np.arange(own.sum()) - np.repeat(np.cumsum(own) - own, own)
    own_rows = flat_history[np.repeat(starts[model], own) + within]
    keys = np.unique(np.concatenate([user_of_own * n_items + own_rows, user_of_extra * n_items + child]))
    user_row, item_row = np.divmod(keys, n_items)
    return pa.table(
        {
            "user_id": users.column("user_id").combine_chunks().take(pa.array(user_row)),
            "item_id": catalog.column("item_id").combine_chunks().take(pa.array(item_row)),
        }
    )


def synthetic_ranker(
    lake: Lake, catalog: pa.Table, users: pa.Table, ds: dt.date, trees: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Train a LightGBM ranker with ``pipelines.training.ranker.train_ranker`` on labelled rows drawn from the
    day, export it and make it the ranker champion of the bench lake.

    Rows: 20,000 (user, day) groups of 10 random posts. The label (0..4) grades a hidden utility built
    from the pipeline's own features (click-through, tag affinity and overlap, retrieval score, age, the
    user's click-through) with interactions and noise, so boosting keeps finding structure and the model
    is as deep as ``trees`` rounds allow: what scoring costs with a production-sized model.
    """
    from pipelines.core.model_settings import RankerConfig
    from pipelines.core.settings import RankerBlessingConfig
    from pipelines.training.ranker import (
        FEATURE_NAMES,
        RankingPairs,
        ranker_features,
        save_ranker,
        train_ranker,
    )
    from pipelines.training.registry import new_version, promote_if_blessed

    config = RankerConfig(num_boost_round=trees, early_stopping_rounds=trees)
    groups, per_group = 20_000, 10
    user_row = np.repeat(rng.integers(0, users.num_rows, groups), per_group)
    item_row = rng.integers(0, catalog.num_rows, groups * per_group)
    day = np.repeat(rng.integers(0, 7, groups), per_group)
    item_part = catalog.select(["tags", *ranker_item_columns()]).take(pa.array(item_row))
    user_part = users.select(["user_id", *ranker_user_columns()]).take(pa.array(user_row))
    rows = pa.table(
        {
            "user_id": user_part.column("user_id"),
            "item_id": catalog.column("item_id").take(pa.array(item_row)),
            "ds": pa.array(np.datetime64(ds) - day.astype("timedelta64[D]"), pa.date32()),
            **{name: item_part.column(name) for name in item_part.column_names},
            **{name: user_part.column(name) for name in user_part.column_names if name != "user_id"},
        }
    )
    score = np.clip(rng.normal(0.3, 0.12, rows.num_rows), -1, 1)
    rank = np.clip(
        np.round((1 - score) * 80 + rng.normal(0, 10, rows.num_rows)), 1, config.retrieval_depth + 1
    )
    features = ranker_features(RankingPairs.from_examples(rows, score, rank), config.retrieval_depth)
    f = {name: np.nan_to_num(features[:, j].astype(np.float64)) for j, name in enumerate(FEATURE_NAMES)}
    utility = (
        3 * f["ctr_short"] * (1 + f["tag_affinity"])
        + 0.8 * f["selected_tag_overlap"]
        + 2 * f["retrieval_score"]
        - 0.05 * np.minimum(f["item_age_days"], 30) * (f["user_ctr_lookback"] > 0.05)
        + 0.3 * np.log1p(f["engagements_short"])
        + rng.normal(0, 0.3, rows.num_rows)
    )
    cuts = np.quantile(utility, [0.80, 0.90, 0.95, 0.98])
    label = np.searchsorted(cuts, utility).astype(np.int64)
    split = np.where(np.repeat(rng.random(groups) < 0.8, per_group), "train", "eval")
    rows = rows.append_column("label", pa.array(label)).append_column("split", pa.array(split))
    started = time.perf_counter()
    result = train_ranker(rows, np.column_stack([score, rank]), config)
    version = new_version(ds, config.model_dump())
    save_ranker(result, lake, version)
    decision = promote_if_blessed(
        lake, RANKER, version, result.metrics, None, RankerBlessingConfig(floor=0.0)
    )
    if not decision.promoted:
        raise SystemExit(f"the synthetic ranker was not promoted: {decision.reason}")
    return {
        "trees": result.ranker.booster.num_trees(),
        "ndcg_at_10": round(result.metrics["ndcg_at_10"], 4),
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def ranker_item_columns() -> list[str]:
    from pipelines.training.ranker import ITEM_NUMERIC_FEATURES

    return list(ITEM_NUMERIC_FEATURES.values())


def ranker_user_columns() -> list[str]:
    from pipelines.training.ranker import USER_COLUMNS

    return list(USER_COLUMNS)


def install_ranker(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Make the ranker asked for the champion of the bench lake, unless it already is; describe it.

    ``--ranker-trees 0`` copies the small world's champion ranker; ``N`` trains a synthetic one.
    """
    from pipelines.serving.inputs import read_input
    from pipelines.training.registry import champion_version

    facts_file = work / "ranker.json"
    if facts_file.exists() and json.loads(facts_file.read_text())["trees_asked"] == args.ranker_trees:
        return json.loads(facts_file.read_text())
    lake = Lake(str(work / "lake"))
    shutil.rmtree(work / "lake" / "models" / RANKER, ignore_errors=True)
    if args.ranker_trees == 0:
        source = Lake(args.world_lake)
        shutil.copytree(Path(source.path(f"models/{RANKER}")), work / "lake" / "models" / RANKER)
        version = champion_version(lake, RANKER)
        config = lake.read_json(f"{LakePaths.model_dir(RANKER, version)}/config.json")
        facts = {"trees": config["num_trees"], "origin": "the small world's champion"}
    else:
        catalog, users = read_input(lake, args.ds, "items"), read_input(lake, args.ds, "users")
        rng = np.random.default_rng(args.seed + 1)
        facts = synthetic_ranker(lake, catalog, users, args.ds, args.ranker_trees, rng)
        facts["origin"] = (
            f"trained on synthetic labelled rows of the day (eval NDCG@10 {facts['ndcg_at_10']})"
        )
    facts["trees_asked"] = args.ranker_trees
    facts_file.write_text(json.dumps(facts))
    log(f"ranker: {facts['trees']} trees, {facts['origin']}")
    return facts


def _publish(lake: Lake, dataset: str, files: dict[str, pa.Table], metadata: dict[str, Any]) -> None:
    staging = lake.begin_publish(dataset)
    for name, table in files.items():
        lake.write_parquet(f"{staging}/{name}", table)
    lake.publish(dataset, staging, list(files), metadata=metadata)


def build_day(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Publish the synthetic day into ``work/lake`` (inputs, embeddings, index, models); return facts."""
    from pipelines.core.settings import IndexConfig
    from pipelines.serving.embeddings import EMBEDDINGS_FILE
    from pipelines.serving.index_store import build_and_publish_index
    from pipelines.training.two_tower import load_towers

    source = Lake(args.world_lake)
    real = read_real_world(source, args.ds)
    dim = real["vectors"].shape[1]
    if dim != args.dim:
        raise SystemExit(f"--dim {args.dim}: the small world's two-tower embeds in {dim} dimensions")
    rng = np.random.default_rng(args.seed)
    if work.exists():
        shutil.rmtree(work)
    lake_dir = work / "lake"
    lake = Lake(str(lake_dir))
    shutil.copytree(Path(source.path(f"models/{TWO_TOWER}")), lake_dir / "models" / TWO_TOWER)

    started = time.perf_counter()
    catalog, vectors, parent = synthetic_items(real, args.items, args.noise, args.ds, rng)
    users, model = synthetic_users(real, catalog, args.users, rng)
    seen = synthetic_seen(real, catalog, parent, users, model, args.seen_per_user, rng)
    log(
        f"synthetic day: {catalog.num_rows:,} posts, {users.num_rows:,} users, {seen.num_rows:,} seen pairs "
        f"in {time.perf_counter() - started:.0f} s"
    )
    profiles = users.select(["user_id", "language", "selected_tags", "blocked_tags", "blocked_sources"])
    _publish(
        lake,
        LakePaths.inputs(args.ds),
        {
            "users.parquet": users,
            "items.parquet": catalog,
            "seen.parquet": seen,
            "profiles.parquet": profiles,
        },
        {"rows": {"users": users.num_rows, "items": catalog.num_rows, "seen": seen.num_rows}},
    )
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
        {"model_version": real["two_tower_version"], "n_items": catalog.num_rows, "dim": dim},
    )
    towers = load_towers(lake, real["two_tower_version"])
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
        "exploration_fresh_items": int((catalog.column("item_age_days").to_numpy() <= 3).sum()),
        "index": report.settings,
        "index_recall": report.recall,
        "index_build_seconds": round(report.build_seconds, 1),
    }


# -- one shard, in a child process -----------------------------------------------------------------------
def _vm_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def use_exact_search(lake: Lake, ds: str) -> None:
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


def context_size(lake: Lake, ds: str, settings: Settings) -> dict[str, Any]:
    """Bytes held by the serving context: arrays and tables, and the process RSS it added."""
    from pipelines.serving.context import load_context

    before = _vm_rss()
    ctx = load_context(lake, ds, settings)
    after = _vm_rss()
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
    }


def serve_shard(args: argparse.Namespace) -> dict[str, Any]:
    """Run the real shard task once and return its result with memory figures."""
    from pipelines.serving.shards import candidates_for_shard

    work = Path(args.work_dir)
    lake = Lake(str(work / "lake"))
    settings = Settings(data_dir=work, lake=str(work / "lake"))
    if args.mode == "context":
        return context_size(lake, args.ds, settings)
    if args.mode == "exact":
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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["path"] = lake.path(f"{staging}/{result['file']}")
    result["peak_rss"] = usage.ru_maxrss * 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def run_child(args: argparse.Namespace, mode: str, profile: int = 0) -> dict[str, Any]:
    """Run ``--serve mode`` in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, __file__, "--serve", mode, "--work-dir", args.work_dir, "--ds", args.ds]
    command += ["--shard", str(args.shard), "--num-shards", str(args.num_shards), "--profile", str(profile)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} shard run failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg"] = (load_before, os.getloadavg()[0])
    return result


# -- report ----------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


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
    ranker = day["ranker"]
    print(f"ranker: LightGBM lambdarank, {ranker['trees']} trees of up to 31 leaves, {ranker['origin']}")
    header = f"{'stage':<12}" + "".join(f"{m + ' s':>11}{m + ' users/s':>17}" for m in runs)
    print(header + "\n" + "-" * len(header))
    for stage in ("load", *STAGES):
        cells = ""
        for run in runs.values():
            seconds = run["seconds"].get(stage, 0.0)
            rate = f"{n_users / seconds:,.0f}" if seconds and stage != "load" else "-"
            cells += f"{seconds:>11.2f}{rate:>17}"
        print(f"{stage:<12}{cells}")
    print("-" * len(header))
    serve = {mode: sum(run["seconds"].get(s, 0.0) for s in STAGES) for mode, run in runs.items()}
    print(f"{'end to end':<12}" + "".join(f"{t:>11.2f}{n_users / t:>17,.0f}" for t in serve.values()))
    for stage in ("embed_users", "retrieve"):
        cells = ""
        for run in runs.values():
            busy = run.get("overlapped_seconds", {}).get(stage, 0.0)
            cells += f"{busy:>11.2f}{n_users / busy if busy else 0:>17,.0f}"
        print(f"{stage + '*':<12}{cells}")
    print("* busy time of the next batch's user tower and retrieval, run ahead in a background thread;")
    print("  the table above counts only the time the pipeline waited for them")
    print(f"{'peak RSS':<12}" + "".join(f"{_gb(r['peak_rss']):>28}" for r in runs.values()))
    print(f"{'CPU s':<12}" + "".join(f"{r['cpu_seconds']:>28.1f}" for r in runs.values()))
    print(
        f"{'load avg':<12}"
        + "".join(f"{r['loadavg'][0]:>20.2f} -> {r['loadavg'][1]:.2f}" for r in runs.values())
    )
    shards = Settings().candidates.num_shards
    for mode, seconds in serve.items():
        rate = n_users / seconds
        load = runs[mode]["seconds"]["load"]
        total = day["users"] / rate + shards * load
        print(
            f"{mode}: {day['users']:,} users at {rate:,.0f} users/s (embed to write) take "
            f"{day['users'] / rate / 60:.1f} min; in the default {shards} shards, plus {load:.0f} s of "
            f"load each: {total / 60:.1f} min on one 2-core worker"
        )
    if "exact" in runs:
        busy = {
            m: r.get("overlapped_seconds", {}).get("retrieve") or r["seconds"]["retrieve"]
            for m, r in runs.items()
        }
        ratio = busy["exact"] / busy["scann"]
        shared = overlap(runs["scann"]["path"], runs["exact"]["path"])
        print(f"retrieve: exact takes {ratio:.1f}x ScaNN's time; {shared:.3f} of the final rows are the same")
    print(
        f"serving context: +{_gb(ctx['rss_added'])} RSS (items table {_gb(ctx['items_table'])}, item id "
        f"strings {_gb(ctx['item_ids_objects'])}, numeric arrays {_gb(ctx['numeric_arrays'])} of which "
        f"vectors {_gb(ctx['item_vectors'])}; the rest is ScaNN, the models and the allocator)"
    )


def main(argv: list[str] | None = None) -> None:
    from pipelines.core.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64, help="must be the small world's embedding size")
    parser.add_argument("--sample", type=int, default=20_000, help="users in the measured shard (about)")
    parser.add_argument("--seen-per-user", type=float, default=30.0)
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the noise around a parent")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--ranker-trees",
        type=int,
        default=200,
        help="boosting rounds of the synthetic ranker; 0 uses the small world's champion ranker",
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
        args.mode = args.serve
        print(json.dumps(serve_shard(args), default=str))
        return

    args.world_lake = args.world_lake or load_settings().lake_url
    args.num_shards = max(1, round(args.users / args.sample))
    work = Path(args.work_dir)
    params = {
        key: getattr(args, key)
        for key in (
            "users",
            "items",
            "dim",
            "seen_per_user",
            "noise",
            "seed",
            "world_lake",
            "ds",
        )
    } | {"version": WORLD_VERSION}
    facts_file = work / "day.json"
    cached = json.loads(facts_file.read_text()) if facts_file.exists() else None
    if cached and cached["params"] == params:
        day = cached["day"]
        log(f"reusing the synthetic day in {work}")
    else:
        day = build_day(args, work)
        facts_file.write_text(json.dumps({"params": params, "day": day}, default=str))
    day["ranker"] = install_ranker(args, work)
    runs = {"scann": run_child(args, "scann", args.profile)}
    if not args.no_exact:
        runs["exact"] = run_child(args, "exact")
    report(args, day, runs, run_child(args, "context"))


if __name__ == "__main__":
    main()
