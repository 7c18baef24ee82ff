"""The ceiling of a synthetic regime's test night: lists ranked by the generator's own engagement odds.

    python bench/bench_ceiling.py default --json /tmp/q-default.json [--workdir /tmp/nightfeed-quality]

Reads a data set that ``bench/bench_quality.py`` built (its warehouse in ``--workdir``, its test night and
scores in ``--json``), rebuilds the same world (same scale, regime, seed and end date), and draws the
window after the test night ``--draws`` more times from fresh random streams (never the stream the
warehouse's days came from). Each user's list is the posts the user could be listed that night (live,
never seen) ordered by how often the user engaged with them over the draws, then by how often anyone did:
the lists of a system that knows the generator. They are scored exactly as every system of the
bench, against what the world really did in the window (run it with the ``NIGHTFEED_WORLD__*`` environment
the bench ran with), so the figure bounds what any system can reach
there; the bench prints it next to the served system and the best baseline of the JSON. Feed regimes only
(the ``ratings`` regime draws its whole log at once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.core.context import settings_with
from pipelines.core.warehouse import open_warehouse
from pipelines.data.world import World, world_config
from pipelines.data.world.vocabulary import item_id, user_id
from pipelines.evaluation.replay import Replay, load_night
from pipelines.serving.model_store import ModelStore

FEED_REGIMES = ("default", "popularity", "collaborative", "content", "freshness")
# Random streams of the draws: [seed, day, DRAW_STREAM + k], never a day's own stream [seed, day].
DRAW_STREAM = 1_000


def engagement_counts(world: World, night: dt.date, window_days: int, draws: int) -> np.ndarray:
    """``(n_users, n_items)`` float32: engagements of each user with each post over ``draws`` fresh draws
    of the days ``[night, night + window_days)``."""
    from pipelines.core.schema import ENGAGEMENT_TYPES

    config = world.config
    counts = np.zeros((config.n_users, config.n_items), np.float32)
    first = (night - world.start).days
    for k in range(draws):
        for i in range(first, min(first + window_days, config.n_days)):
            found = world.interactions(i, np.random.default_rng([config.seed, i, DRAW_STREAM + k]))
            if found is None:
                continue
            engaged = np.isin(found.kind, ENGAGEMENT_TYPES)
            pairs = np.unique(found.user[engaged].astype(np.int64) * config.n_items + found.item[engaged])
            np.add.at(counts.reshape(-1), pairs, 1.0)
    return counts


def ceiling_lists(counts: np.ndarray, replay: Replay, user_index: dict[str, int], depth: int) -> pa.Table:
    """Each evaluated user's top ``depth`` of the night's listable posts by ``counts`` (then by the
    posts' total count): ``user_id, item_id, rank``. ``user_index`` maps user ids to the world's rows."""
    night = replay.night
    catalog = night.inputs["items"].column("item_id").to_pylist()
    index = {item_id(j): j for j in range(counts.shape[1])}
    columns = np.array([index[i] for i in catalog])
    overall = counts[:, columns].sum(axis=0)
    seen = night.inputs["seen"]
    seen = seen.filter(pc.is_in(seen.column("user_id"), value_set=night.eval_users)).to_pandas()
    seen_by_user = seen.groupby("user_id")["item_id"].apply(set).to_dict()
    position = {item: j for j, item in enumerate(catalog)}
    users, items, ranks = [], [], []
    for uid in night.eval_users.to_pylist():
        row = counts[user_index[uid], columns] + overall / (overall.max() + 1.0)
        for item in seen_by_user.get(uid, ()):
            if item in position:
                row[position[item]] = -1.0
        top = np.argsort(-row, kind="stable")[:depth]
        top = top[row[top] >= 0]
        users += [uid] * len(top)
        items += [catalog[j] for j in top]
        ranks += list(range(1, len(top) + 1))
    return pa.table({"user_id": users, "item_id": items, "rank": pa.array(ranks, pa.int64())})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("regime", choices=FEED_REGIMES)
    parser.add_argument("--json", type=Path, required=True, help="bench_quality.py's --json output")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nightfeed-quality"))
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args(argv)
    results = [r for r in json.loads(args.json.read_text()) if r["dataset"] == args.regime]
    if not results:
        parser.error(f"{args.json} holds no result of {args.regime}")
    result = results[-1]
    selection = result["train"]["selection"]
    night = dt.date.fromisoformat(selection["plan"]["test"])
    window = int(selection["plan"]["window_days"])
    os.environ["NIGHTFEED_DATA_DIR"] = str(args.workdir / args.regime)
    settings = settings_with(None)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    world = World(world_config("default", settings.world, args.regime), dt.date.fromisoformat(result["ds"]))
    with open_warehouse(settings) as warehouse:
        replay = Replay(load_night(warehouse, night, window, settings), settings, ModelStore(None))
    users = {user_id(u): u for u in range(world.config.n_users)}
    if not set(replay.night.eval_users.to_pylist()) <= users.keys():
        raise SystemExit(
            f"the world rebuilt here ({world.config.n_users} users) is not the one in "
            f"{args.workdir / args.regime}: run with the NIGHTFEED_WORLD__* environment the bench ran with"
        )
    counts = engagement_counts(world, night, window, args.draws)
    scores = replay.score(ceiling_lists(counts, replay, users, max(settings.selection.ks))).means()
    test = selection["test"]
    # What bench_quality.py's targets found: the served system and the best tuned baseline.
    served, best = result["targets"]["served"], result["targets"]["best_baseline"]
    print(
        f"{args.regime}: test night {night} ({len(replay.night.eval_users)} users, {window}-day window), "
        f"{args.draws} draws, {time.perf_counter() - started:.0f} s, load {load_before:.2f} -> "
        f"{os.getloadavg()[0]:.2f}"
    )
    print("| lists | R@10 | R@50 | R@100 | NDCG@10 | R@50 / best baseline |\n|---|---|---|---|---|---|")
    base = test[best]["summary"]["recall_at_50"]
    rows = [("ceiling (the generator's odds)", scores), (f"served: {served}", test[served]["summary"])]
    rows.append((f"best baseline: {best}", test[best]["summary"]))
    for label, s in rows:
        print(
            f"| {label} | {s['recall_at_10']:.3f} | {s['recall_at_50']:.3f} | {s['recall_at_100']:.3f} | "
            f"{s['ndcg_at_10']:.3f} | {s['recall_at_50'] / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
