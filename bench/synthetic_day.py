"""The synthetic day of the candidates benchmark, grown from a small world that was trained and served.

* user tower: the served two-tower of that world, used as it is, so user-tower inference is real
  TensorFlow work on real histories (users whose histories use the model's vocabulary);
* catalog: the real eligible posts plus variants of them. A variant copies its parent's tags, title,
  summary, types and language, takes the parent's source 60% of the time (else one of ``items / 400``
  sources) and one of ``items / 20`` authors; ages are uniform over the 30-day window and popularity is
  heavy-tailed. Its embedding is the parent's real item-tower embedding plus gaussian noise, normalised:
  clusters around real posts, so real user queries find real neighbourhoods;
* users: each copies a real user's history, selected and affinity tags and language (account age and
  activity jittered); 10% block one tag and 5% block one source;
* seen: about ``per_user`` posts per user, the catalog posts of the history plus variants of their
  parents (the neighbourhood the user's query lands in, so the seen filter has real work);
* interactions: a third of the seen pairs, engaged with one to three times in the 30 days before the day;
* ranker: LightGBM lambdarank trained on labelled rows drawn from the day (see :func:`synthetic_ranker`).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths

MAX_AGE_DAYS = 30.0
BLOCK_TAG_SHARE = 0.10
BLOCK_SOURCE_SHARE = 0.05
ENGAGED_SHARE = 1 / 3


def read_real_world(lake: Lake, ds: dt.date) -> dict[str, Any]:
    """The small world's serving inputs, item embeddings and served system.

    Raises:
        SystemExit: the small world has not been trained and served yet (says which commands to run).
    """
    from pipelines.serving.embeddings import read_embeddings
    from pipelines.serving.inputs import read_input
    from pipelines.serving.system import NoChampionError, served_system

    try:
        system = served_system(lake, ds, use_current=True).system
    except NoChampionError:
        system = None
    if system is None or system.two_tower_version is None or not lake.is_published(LakePaths.embeddings(ds)):
        raise SystemExit(
            f"{lake.uri('')} has no served two-tower system with embeddings for ds={ds} ({system}); "
            "make the small world with the commands in bench/README.md"
        )
    items = read_input(lake, ds, "items").sort_by("item_id")
    embeddings, _ = read_embeddings(lake, ds)
    embeddings = embeddings.sort_by("item_id")
    if embeddings.column("item_id").to_pylist() != items.column("item_id").to_pylist():
        raise SystemExit(f"ds={ds}: the embeddings do not cover the items input")
    flat = embeddings.column("embedding").combine_chunks().flatten().to_numpy()
    return {
        "items": items,
        "users": read_input(lake, ds, "users").sort_by("user_id"),
        "vectors": flat.reshape(items.num_rows, -1).astype(np.float32),
        "system": system,
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


def synthetic_interactions(seen: pa.Table, ds: dt.date, rng: np.random.Generator) -> pa.Table:
    """Engagements like ``sql/serving/interactions.sql``: ``ENGAGED_SHARE`` of the seen pairs, each with
    one to three events, the last in the 30 days before the end of ``ds``."""
    picked = np.flatnonzero(rng.random(seen.num_rows) < ENGAGED_SHARE)
    end = np.datetime64(ds) + np.timedelta64(1, "D")
    last = end - (rng.random(len(picked)) * MAX_AGE_DAYS * 86400e6).astype("timedelta64[us]")
    return pa.table(
        {
            "user_id": seen.column("user_id").take(pa.array(picked)),
            "item_id": seen.column("item_id").take(pa.array(picked)),
            "n_events": rng.integers(1, 4, len(picked)),
            "event_ts": pa.array(last, pa.timestamp("us", tz="UTC")),
        }
    )


def synthetic_ranker(
    lake: Lake, catalog: pa.Table, users: pa.Table, ds: dt.date, trees: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Train a LightGBM ranker with ``pipelines.training.ranker.train_ranker`` on labelled rows drawn from the
    day and export it to the bench lake.

    Rows: 20,000 (user, day) groups of 10 random posts. The label (0..4) grades a hidden utility built
    from the pipeline's own features (click-through, tag affinity and overlap, retrieval score, age, the
    user's click-through) with interactions and noise, so boosting keeps finding structure and the model
    is as deep as ``trees`` rounds allow: what scoring costs with a production-sized model.
    """
    from pipelines.core.model_settings import RankerConfig
    from pipelines.training.ranker import (
        FEATURE_NAMES,
        RankingPairs,
        ranker_features,
        save_ranker,
        train_ranker,
    )
    from pipelines.training.registry import new_version

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
    return {
        "version": version,
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
