"""Command line: ``python -m pipelines <command>``. Every command runs the same jobs the DAGs run.

Commands:
    world       generate the synthetic world and load it into the raw tables
    import      load your own events/items/users files (CSV or Parquet), or MovieLens files
    features    build the feature tables for one date or a date range
    train       choose the served system on replayed past nights; promoted only if it wins the gate
    nightly     run the nightly stages in this process: inputs, embeddings, index, shards, publish
    digests     render and publish the digest e-mails of a date
    digest-preview  render one user's digest to an HTML file
    report      build and publish the run report of a date
    outputs     print where a date's outputs are

A user's mistake (a bad date, flag, file or setting, a missing input, data that fails its checks) prints
one ``error:`` line, usually a ``hint:`` line, and exits 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from pipelines.core import jobs
from pipelines.core.errors import PermanentError, UserError
from pipelines.core.params import (
    DRY_RUN_USERS,
    FORCE_RETRAIN,
    NUM_SHARDS,
    SKIP_DIGESTS,
    TOP_K,
    USE_CURRENT_SYSTEM,
    RunParam,
)
from pipelines.core.run_date import BadRunDate, date_range, parse_run_date
from pipelines.core.settings import WorldRegime

if TYPE_CHECKING:
    from pipelines.core.context import RunContext

log = logging.getLogger("pipelines")
# The metrics `train` prints per system of the test night (the run report has them all).
SHOWN_METRICS = ("recall_at_50", "ndcg_at_10", "coverage_at_10", "fresh_share_at_10", "n_users")


def _date(value: str) -> dt.date:
    try:
        return parse_run_date(value)
    except BadRunDate as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _print(result: Any) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The run params given as flags of this command."""
    return {param.name: getattr(args, param.name) for param in COMMAND_PARAMS.get(args.command, ())}


_CONTEXTS: list[RunContext] = []  # the runs of this command: their night leases end with it


def _context(args: argparse.Namespace) -> RunContext:
    from pipelines.core.context import RunContext

    ctx = RunContext.create(args.ds, _params(args))
    _CONTEXTS.append(ctx)
    return ctx


def _release_nights() -> None:
    from pipelines.core import night

    while _CONTEXTS:
        ctx = _CONTEXTS.pop()
        night.release(ctx.lake, ctx.ds, ctx.holder)


def cmd_world(args: argparse.Namespace) -> None:
    from pipelines.core.context import settings_with
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.world import World, load_world, world_config

    settings = settings_with(None)
    config = world_config(args.scale, settings.world, args.regime)
    if args.seed is not None:
        config = config.model_copy(update={"seed": args.seed})
    world = World(config, args.end_date)
    started = time.perf_counter()
    with open_warehouse(settings) as warehouse:
        totals = load_world(warehouse, world, progress=True)
    elapsed = time.perf_counter() - started
    days = [world.days()[0], world.days()[-1]]
    _print({"days": days, "regime": config.regime, "rows": totals, "seconds": round(elapsed, 1)})


def cmd_import(args: argparse.Namespace) -> None:
    from pipelines.core.context import settings_with
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.importer import import_files
    from pipelines.data.movielens import import_movielens

    if not args.movielens and not (args.events and args.items and args.users):
        raise UserError(
            "import needs --events, --items and --users (or --movielens DIR)",
            hint="python -m pipelines import --events events.csv --items items.csv --users users.csv",
        )
    settings = settings_with(None)
    # The rows are spilled on the data disk, not in a /tmp that may be held in memory.
    scratch = settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with open_warehouse(settings) as warehouse:
        if args.movielens:
            report = import_movielens(warehouse, args.movielens, settings.quality, scratch_dir=scratch)
        else:
            report = import_files(
                warehouse,
                args.events,
                args.items,
                args.users,
                settings.quality,
                allow_empty=args.allow_empty,
                scratch_dir=scratch,
            )
    _print(report.to_dict())


def cmd_features(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from pipelines.data.features import NoEventsError
    from pipelines.jobs import run

    if args.end and not args.start:
        args.start = _first_raw_day(args.end)
    if args.end and args.end < args.start:
        raise UserError(f"--end {args.end} is before --start {args.start}")
    if not args.end:
        _print(run(jobs.BUILD_FEATURES, args.ds))
        return
    # A history build over imported data: days without events are normal there (a gap in the log) and
    # are built as quiet days, with a count, so that every night after them can be served and replayed;
    # a single day (above, and the nightly DAG) still refuses an empty day.
    days = date_range(args.start, args.end)
    totals: dict[str, int] = {}
    gaps = []
    for ds in tqdm(days, desc="features", unit="day"):
        try:
            report = run(jobs.BUILD_FEATURES, ds)
        except NoEventsError:
            gaps.append(ds)
            report = run(jobs.BUILD_FEATURES, ds, quiet_day=True)
        for table, rows in report["rows"].items():
            totals[table] = totals.get(table, 0) + rows
    if gaps:
        log.warning(
            "%d of %d days had no raw events (first %s, last %s); built from the days before them",
            len(gaps),
            len(days),
            gaps[0],
            gaps[-1],
        )
    _print(
        {
            "days": [days[0], days[-1]],
            "n_days": len(days),
            "days_without_events": len(gaps),
            "rows_over_all_days": totals,
        }
    )


def _first_raw_day(end: dt.date) -> dt.date:
    """The first plausible day of raw events up to ``end``: a stray epoch-0 or far-off day is skipped."""
    from pipelines.core.context import settings_with
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.plausible import first_plausible_day

    settings = settings_with(None)
    with open_warehouse(settings) as warehouse:
        return first_plausible_day(warehouse, end, settings.quality)


def _require_published(ctx: RunContext, *datasets: str) -> None:
    """Refuse a command that reads nightly outputs of ``ctx.ds`` that are not published.

    Args:
        ctx: the run.
        datasets: names of :class:`~pipelines.core.paths.LakePaths` datasets (``inputs``, ``candidates``).

    Raises:
        UserError: one of them is not published.
    """
    from pipelines.core.paths import LakePaths

    for name in datasets:
        dataset = getattr(LakePaths, name)(ctx.ds)
        if not ctx.lake.is_published(dataset):
            raise UserError(
                f"the {name} of ds={ctx.ds} are not published ({ctx.lake.uri(dataset)})",
                hint=f"run `python -m pipelines nightly --ds {ctx.ds}` first",
            )


def cmd_train(args: argparse.Namespace) -> None:
    from pipelines.jobs import run_in

    result = run_in(_context(args), jobs.TRAIN_SYSTEM)
    summary = {key: result[key] for key in ("version", "promoted", "reason")}
    selection = result.get("selection")
    if selection:
        summary["test_night"] = {
            name: {k: round(v, 4) for k, v in row["summary"].items() if k in SHOWN_METRICS}
            for name, row in selection["test"].items()
        }
    _print(summary)


def _digests(ctx: RunContext) -> dict[str, Any]:
    """Plan, render every shard and publish the digests of ``ctx.ds``, as the nightly DAG does."""
    from pipelines.jobs import run_in

    plan = run_in(ctx, jobs.PLAN_DIGESTS)
    rendered = [run_in(ctx, jobs.RENDER_DIGESTS, **item) for item in plan]
    staging = plan[0]["staging"] if plan else None
    return run_in(ctx, jobs.PUBLISH_DIGESTS, staging=staging, shard_results=rendered)


def cmd_nightly(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from pipelines.core.lake import ScratchLake
    from pipelines.jobs import run_in

    ctx = _context(args)
    out: dict[str, Any] = {}
    for job in (jobs.EXPORT_INPUTS, jobs.EMBED_ITEMS, jobs.BUILD_INDEX):
        out[job.name] = run_in(ctx, job)
    plan = run_in(ctx, jobs.PLAN_SHARDS)
    shards = [
        run_in(ctx, jobs.CANDIDATES_FOR_SHARD, **item) for item in tqdm(plan, desc="shards", unit="shard")
    ]
    published = run_in(ctx, jobs.PUBLISH_CANDIDATES, staging=plan[0]["staging"], shard_results=shards)
    published.pop("shards", None)
    out[jobs.PUBLISH_CANDIDATES.name] = published
    if not args.skip_digests:
        out[jobs.PUBLISH_DIGESTS.name] = _digests(ctx)
    out[jobs.WRITE_REPORT.name] = run_in(ctx, jobs.WRITE_REPORT)
    if isinstance(ctx.lake, ScratchLake):
        out["dry_run"] = {"scratch": ctx.lake.scratch_uri(), "published": "nothing"}
    _print(out)


def cmd_digests(args: argparse.Namespace) -> None:
    ctx = _context(args)
    _require_published(ctx, "inputs", "candidates")
    _print(_digests(ctx))


def cmd_report(args: argparse.Namespace) -> None:
    from pipelines.jobs import run_in

    _print(run_in(_context(args), jobs.WRITE_REPORT))


def cmd_freshness(args: argparse.Namespace) -> None:
    from pipelines.jobs import run_in

    _print(run_in(_context(args), jobs.CHECK_FRESHNESS))


def cmd_digest_preview(args: argparse.Namespace) -> None:
    from pipelines.delivery.digests.preview import preview_digest
    from pipelines.serving.inputs import read_input

    ctx = _context(args)
    _require_published(ctx, "inputs", "candidates")
    users, items = read_input(ctx.lake, ctx.ds, "profiles"), read_input(ctx.lake, ctx.ds, "items")
    path = preview_digest(ctx.lake, ctx.ds, args.user, users, items, ctx.settings.digest, args.out)
    print(f"digest preview of {args.user} for {ctx.ds}: {path}")


def cmd_outputs(args: argparse.Namespace) -> None:
    from pipelines.core.night import read_night
    from pipelines.core.paths import LakePaths
    from pipelines.delivery.report.build import REPORT_HTML

    ctx = _context(args)
    settings, lake, ds = ctx.settings, ctx.lake, ctx.ds
    datasets = {**LakePaths.night_datasets(ds), "quarantine": LakePaths.quarantine(ds)}
    out: dict[str, Any] = {
        "warehouse": str(settings.duckdb_file)
        if settings.warehouse == "duckdb"
        else settings.bigquery_dataset,
        "lake": lake.uri(""),
    }
    for name, rel in datasets.items():
        out[name] = {"uri": lake.uri(rel), "published": lake.is_published(rel)}
        if out[name]["published"]:
            # The files sit in the run folder the manifest names, not in the dataset folder itself.
            out[name]["files_in"] = lake.uri(f"{rel}/run={lake.read_manifest(rel)['staging']}")
    out["report_html"] = f"{out['report']['files_in']}/{REPORT_HTML}" if out["report"]["published"] else None
    # The last complete night: the run of each dataset that belongs together (written last).
    out["night"] = {"uri": lake.uri(LakePaths.night(ds)), "runs": (read_night(lake, ds) or {}).get("runs")}
    _print(out)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str]] = {
    "world": (cmd_world, "generate the synthetic world into the raw tables"),
    "import": (cmd_import, "load your own data files or MovieLens files into the raw tables"),
    "features": (cmd_features, "build the feature tables for a date or a date range"),
    "train": (cmd_train, "choose the served system on replayed past nights (promoted if it wins the gate)"),
    "nightly": (cmd_nightly, "run the nightly stages in this process"),
    "digests": (cmd_digests, "render and publish the digest e-mails of a date"),
    "digest-preview": (cmd_digest_preview, "render one user's digest to an HTML file"),
    "report": (cmd_report, "build and publish the run report of a date"),
    "outputs": (cmd_outputs, "print where a date's outputs are"),
    "freshness": (cmd_freshness, "fail (exit 2) when the newest published candidates or digests are too old"),
}
# The run params each command offers as flags (the same declarations the DAGs' params come from).
COMMAND_PARAMS: dict[str, tuple[RunParam, ...]] = {
    "train": (FORCE_RETRAIN,),
    "nightly": (NUM_SHARDS, TOP_K, DRY_RUN_USERS, USE_CURRENT_SYSTEM, SKIP_DIGESTS),
    "digests": (DRY_RUN_USERS,),
}


def _add_param(parser: argparse.ArgumentParser, param: RunParam) -> None:
    if param.kind == "boolean":
        parser.add_argument(param.flag, dest=param.name, action="store_true", help=param.description)
    else:
        parser.add_argument(param.flag, dest=param.name, type=int, default=None, help=param.description)


class _Parser(argparse.ArgumentParser):
    """argparse with the command line's error format: one ``error:`` line and a ``hint:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\nhint: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipelines", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "world":
            p.add_argument("--scale", default="default", choices=["tiny", "default", "medium", "large"])
            p.add_argument("--end-date", type=_date, required=True, help="last day of the world")
            p.add_argument("--seed", type=int, default=None)
            p.add_argument(
                "--regime", choices=get_args(WorldRegime), default=None, help="default: the configured regime"
            )
        elif name == "import":
            p.add_argument("--events")
            p.add_argument("--items")
            p.add_argument("--users")
            p.add_argument(
                "--movielens", help="a MovieLens release folder (u.data, ratings.dat or ratings.csv)"
            )
            p.add_argument(
                "--allow-empty", action="store_true", help="accept files with a header and no rows"
            )
        elif name == "features":
            p.add_argument("--ds", type=_date)
            p.add_argument("--start", type=_date, help="first date (default: the first day of raw events)")
            p.add_argument("--end", type=_date, help="last date of a range")
        else:
            p.add_argument("--ds", type=_date, required=True)
        for param in COMMAND_PARAMS.get(name, ()):
            _add_param(p, param)
        if name == "digest-preview":
            p.add_argument("--user", required=True)
            p.add_argument("--out", required=True, help="HTML file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake (any ``PermanentError``) prints ``error:`` and ``hint:`` lines.

    Returns:
        0 on success, 2 for a :class:`~pipelines.core.errors.PermanentError` (no traceback).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "features" and not (args.ds or args.end):
            raise UserError("features needs --ds DATE, or --end DATE with an optional --start DATE")
        try:
            COMMANDS[args.command][0](args)
        finally:
            _release_nights()
    except PermanentError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 2
    return 0
