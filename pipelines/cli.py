"""Command line: ``python -m pipelines <command>``. Every command runs the same jobs the DAGs run.

Commands:
    world       generate the synthetic world and load it into the raw tables
    import      load your own events/items/users files (CSV or Parquet), or MovieLens files
    features    build the feature tables for one date or a date range
    train       train the two-tower model and the ranker; each is promoted only if blessed
    ablate      train two-tower variants (without log-Q, accidental-hit removal, mixed negatives)
    nightly     run the nightly stages in this process: inputs, embeddings, index, shards, publish
    digests     render (and publish) the digest e-mails of a date
    digest-preview  render one user's digest to an HTML file
    report      build and publish the run report of a date
    outputs     print where a date's outputs are
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipelines.core.schema import check_ds

log = logging.getLogger("pipelines")


def _date(value: str) -> str:
    try:
        return check_ds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _dates(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise SystemExit(f"--end {end} is before --start {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _print(result: Any) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


def cmd_world(args: argparse.Namespace) -> None:
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.world import World, load_world, world_config
    from pipelines.jobs import settings_for

    settings = settings_for(None)
    config = world_config(args.scale, settings.world)
    if args.seed is not None:
        config = config.model_copy(update={"seed": args.seed})
    world = World(config, args.end_date)
    started = time.perf_counter()
    with open_warehouse(settings) as warehouse:
        totals = load_world(warehouse, world, progress=True)
    elapsed = time.perf_counter() - started
    _print({"days": [world.days()[0], world.days()[-1]], "rows": totals, "seconds": round(elapsed, 1)})


def cmd_import(args: argparse.Namespace) -> None:
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.importer import import_files, import_movielens
    from pipelines.jobs import settings_for

    with open_warehouse(settings_for(None)) as warehouse:
        if args.movielens:
            _print(import_movielens(warehouse, args.movielens))
        else:
            if not (args.events and args.items and args.users):
                raise SystemExit("import needs --events, --items and --users (or --movielens DIR)")
            _print(import_files(warehouse, args.events, args.items, args.users))


def cmd_features(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from pipelines.jobs import run_features

    if args.end and not args.start:
        args.start = _first_raw_day()
    days = _dates(args.start, args.end) if args.end else [args.ds]
    reports = {}
    for ds in tqdm(days, desc="features", unit="day", disable=len(days) == 1):
        reports[ds] = run_features(ds)
    if len(days) == 1:
        _print(reports[days[0]])
        return
    totals: dict[str, int] = {}
    for report in reports.values():
        for table, rows in report["rows"].items():
            totals[table] = totals.get(table, 0) + rows
    _print({"days": [days[0], days[-1]], "n_days": len(days), "rows_over_all_days": totals})


def _first_raw_day() -> str:
    from pipelines.core.warehouse import open_warehouse
    from pipelines.jobs import settings_for

    with open_warehouse(settings_for(None)) as warehouse:
        days = warehouse.partitions("raw_events")
    if not days:
        raise SystemExit("no raw events loaded yet: run `python -m pipelines world` or `import` first")
    return days[0]


def cmd_train(args: argparse.Namespace) -> None:
    from pipelines import jobs

    results = {}
    if args.model in ("two_tower", "both"):
        results["two_tower"] = jobs.train_two_tower(args.ds)
    if args.model in ("ranker", "both"):
        results["ranker"] = jobs.train_ranker(args.ds)
    _print({name: {k: r[k] for k in ("version", "promoted", "reason")} for name, r in results.items()})


def cmd_ablate(args: argparse.Namespace) -> None:
    from pipelines.core.schema import RETRIEVAL_DATASET_SQL
    from pipelines.core.warehouse import open_warehouse
    from pipelines.jobs import settings_for, training_catalog
    from pipelines.training import two_tower

    settings = settings_for(None)
    cfg = settings.two_tower
    with open_warehouse(settings) as warehouse:
        examples = warehouse.query_file(
            RETRIEVAL_DATASET_SQL, args.ds, train_days=cfg.train_days, eval_days=cfg.eval_days
        )
        catalog = training_catalog(warehouse, args.ds, settings)
    variants = tuple(args.variants or two_tower.ABLATIONS)
    _print(two_tower.ablate_two_tower(examples, catalog, cfg, settings.evaluation, variants))


def cmd_nightly(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from pipelines import jobs

    overrides = jobs.overrides_from_params(
        {"num_shards": args.num_shards, "dry_run_users": args.dry_run_users}
    )
    out: dict[str, Any] = {}
    for name in ("export_inputs", "embed_items", "build_index"):
        out[name] = getattr(jobs, name)(args.ds, overrides)
    plan = jobs.plan_shards(args.ds, overrides)
    shards = [
        jobs.candidates_for_shard(args.ds, p["shard"], p["num_shards"], p["staging"], overrides)
        for p in tqdm(plan, desc="shards", unit="shard")
    ]
    out["publish_candidates"] = jobs.publish_candidates(args.ds, plan[0]["staging"], shards, overrides)
    out["publish_candidates"].pop("shards", None)
    if not args.skip_digests:
        out["render_digests"] = jobs.render_digests(args.ds, overrides)
    out["write_report"] = jobs.write_report(args.ds, overrides)
    _print(out)


def cmd_report(args: argparse.Namespace) -> None:
    from pipelines import jobs

    _print(jobs.write_report(args.ds))


def cmd_digests(args: argparse.Namespace) -> None:
    from pipelines import jobs

    overrides = jobs.overrides_from_params({"dry_run_users": args.dry_run_users})
    _print(jobs.render_digests(args.ds, overrides))


def cmd_digest_preview(args: argparse.Namespace) -> None:
    from pipelines.core.lake import Lake
    from pipelines.delivery.digests import preview_digest
    from pipelines.jobs import settings_for
    from pipelines.serving.candidates import read_input

    settings = settings_for(None)
    lake = Lake(settings.lake_url)
    users, items = read_input(lake, args.ds, "profiles"), read_input(lake, args.ds, "items")
    path = preview_digest(lake, args.ds, args.user, users, items, settings.digest, args.out)
    print(f"digest preview of {args.user} for {args.ds}: {path}")


def cmd_outputs(args: argparse.Namespace) -> None:
    from pipelines.jobs import describe_outputs

    _print(describe_outputs(args.ds))


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str]] = {
    "world": (cmd_world, "generate the synthetic world into the raw tables"),
    "import": (cmd_import, "load your own data files or MovieLens files into the raw tables"),
    "features": (cmd_features, "build the feature tables for a date or a date range"),
    "train": (cmd_train, "train the two-tower model and the ranker (promoted only if blessed)"),
    "ablate": (cmd_ablate, "train two-tower variants with one loss option switched off"),
    "nightly": (cmd_nightly, "run the nightly stages in this process"),
    "digests": (cmd_digests, "render and publish the digest e-mails of a date"),
    "digest-preview": (cmd_digest_preview, "render one user's digest to an HTML file"),
    "report": (cmd_report, "build and publish the run report of a date"),
    "outputs": (cmd_outputs, "print where a date's outputs are"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "world":
            p.add_argument("--scale", default="default", choices=["tiny", "default", "medium", "large"])
            p.add_argument("--end-date", type=_date, required=True, help="last day of the world")
            p.add_argument("--seed", type=int, default=None)
        elif name == "import":
            p.add_argument("--events")
            p.add_argument("--items")
            p.add_argument("--users")
            p.add_argument("--movielens", help="folder with u.data, u.item, u.user")
        elif name == "features":
            p.add_argument("--ds", type=_date)
            p.add_argument("--start", type=_date, help="first date (default: the first day of raw events)")
            p.add_argument("--end", type=_date, help="last date of a range")
        else:
            p.add_argument("--ds", type=_date, required=True)
        if name == "train":
            p.add_argument("--model", choices=["two_tower", "ranker", "both"], default="both")
        elif name == "ablate":
            p.add_argument(
                "--variants", nargs="+", default=None, help="default: every variant the model defines"
            )
        elif name in ("nightly", "digests"):
            p.add_argument("--dry-run-users", type=int, default=None, help="a sample; publishes nothing")
            if name == "nightly":
                p.add_argument("--num-shards", type=int, default=None)
                p.add_argument("--skip-digests", action="store_true")
        elif name == "digest-preview":
            p.add_argument("--user", required=True)
            p.add_argument("--out", required=True, help="HTML file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "features" and not (args.ds or args.end):
        raise SystemExit("features needs --ds DATE, or --end DATE with an optional --start DATE")
    from pipelines.jobs import PermanentFailure

    try:
        COMMANDS[args.command][0](args)
    except PermanentFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
