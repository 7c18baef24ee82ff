"""Candidate shards: users go to shard ``crc32(user_id) % num_shards`` (:mod:`pipelines.serving.sharding`).
Plans the shards of a run date, computes one shard's lists from its part of the inputs into a staging
folder, publishes ``candidates/ds=…/`` (one file per shard, the manifest last) and reads it back."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES
from pipelines.core.settings import Settings
from pipelines.serving.batch import UserBatch
from pipelines.serving.checks import check_lists
from pipelines.serving.context import load_context
from pipelines.serving.inputs import read_input, read_shard_input
from pipelines.serving.lists import lists_for
from pipelines.serving.sharding import shard_of
from pipelines.serving.system import served_system
from pipelines.serving.timing import StageTimer

log = logging.getLogger(__name__)

# The catalog, embeddings, index and models (the same for every shard), then the shard's own inputs.
LOAD_STAGES: tuple[str, ...] = ("load_context", "load_users")


def dry_run_sample(users: pa.Table, n: int) -> pa.Table:
    """A seeded sample of ``n`` users, the same in every shard task of a dry run."""
    picked = np.sort(np.random.default_rng(0).permutation(users.num_rows)[:n])
    return users.take(pa.array(picked))


def plan_shards(lake: Lake, ds: dt.date, settings: Settings) -> list[dict[str, Any]]:
    """Open a fresh staging folder for ``ds``'s candidates and list one work item per shard."""
    staging = lake.begin_publish(LakePaths.candidates(ds))
    n = settings.candidates.num_shards
    return [{"shard": i, "num_shards": n, "staging": staging} for i in range(n)]


def candidates_for_shard(
    lake: Lake, ds: dt.date, shard: int, num_shards: int, staging: str, settings: Settings
) -> dict[str, Any]:
    """Compute and write the candidate lists of one shard of ``ds``'s users into ``staging``.

    Returns:
        The file written, rows, users, users/s of the compute stages (loads, checks and the write
        excluded), seconds per stage (they add up to the wall time; ``load_context`` is the same for
        every shard, ``load_users`` grows with the shard), as ``overlapped_seconds`` the busy time of the
        user tower and retrieval that ran ahead in the background, the system served and, as
        ``system_choice``, which promotion it is and why.

    Raises:
        pipelines.serving.system.NoChampionError: no system is in force for ``ds``.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    started = time.perf_counter()
    timer = StageTimer()
    with timer("load_context"):
        in_force = served_system(lake, ds, settings.use_current_system)
        ctx = load_context(lake, ds, settings, in_force.system, shard, num_shards)
    with timer("load_users"):
        seen = read_shard_input(lake, ds, "seen", shard, num_shards)
        if settings.dry_run_users:
            # The sample is drawn from all users of the day, so it is the same in every shard task.
            users = dry_run_sample(read_input(lake, ds, "users").sort_by("user_id"), settings.dry_run_users)
            users = users.filter(pa.array(shard_of(users.column("user_id"), num_shards) == shard))
            seen = seen.filter(pc.is_in(seen.column("user_id"), value_set=users.column("user_id")))
        else:
            users = read_shard_input(lake, ds, "users", shard, num_shards)
    with timer("prepare"):
        batch = UserBatch.build(users, seen, ctx)
    candidates = lists_for(ctx, batch, settings, timer)
    with timer("check"):
        check_lists(candidates, ctx, batch, settings.candidates.top_k)

    name = LakePaths.shard_file(shard)
    with timer("write"):
        lake.write_parquet(f"{staging}/{name}", candidates)
    elapsed = time.perf_counter() - started
    compute = sum(v for key, v in timer.seconds.items() if key not in (*LOAD_STAGES, "write", "check"))
    result = {
        "shard": shard,
        "file": name,
        "users": users.num_rows,
        "rows": candidates.num_rows,
        "users_per_s": round(users.num_rows / compute, 1) if compute else None,
        "seconds": {key: round(v, 3) for key, v in timer.seconds.items()},
        "overlapped_seconds": {key: round(v, 3) for key, v in timer.overlapped.items()},
        "total_seconds": round(elapsed, 2),
        "system": ctx.system.to_json(),
        "system_choice": in_force.to_json(),
    }
    log.info(
        "shard %d/%d: %d users, %d rows, %s",
        shard,
        num_shards,
        users.num_rows,
        candidates.num_rows,
        result["seconds"],
    )
    return result


def publish_candidates(
    lake: Lake, ds: dt.date, staging: str, shard_results: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    """Publish ``ds``'s candidates: every shard file must be in ``staging``; the manifest goes last.

    A dry run (``settings.dry_run_users``) runs on a :class:`~pipelines.core.lake.ScratchLake`: its lists
    are published in the scratch folder, which no reader looks at, and never loaded into the warehouse.

    Raises:
        pipelines.core.lake.ManifestError: a shard file is missing.
        ValueError: the shard results do not cover every shard, or name different systems.
    """
    shards = sorted(r["shard"] for r in shard_results)
    expected = list(range(settings.candidates.num_shards))
    if shards != expected:
        raise ValueError(f"ds={ds}: shard results {shards} do not cover shards {expected}")
    served = sorted({r["system_choice"]["version"] for r in shard_results})
    if len(served) > 1:
        # A promotion landed while the shards ran: the night must be served by one system.
        raise ValueError(f"ds={ds}: the shards served different systems {served}; run the shards again")
    files = [LakePaths.shard_file(s) for s in shards]
    metadata = {
        "users": sum(r["users"] for r in shard_results),
        "rows": sum(r["rows"] for r in shard_results),
        "num_shards": len(shards),
        "top_k": settings.candidates.top_k,
        "system": shard_results[0]["system"] if shard_results else None,
        "system_choice": shard_results[0]["system_choice"] if shard_results else None,
        "shards": {
            r["shard"]: {"users": r["users"], "rows": r["rows"], "seconds": r["seconds"]}
            for r in shard_results
        },
    }
    lake.publish(LakePaths.candidates(ds), staging, files, metadata=metadata)
    if settings.dry_run_users:
        # A dry run's lake writes to its scratch folder: the lists are there, and no reader sees them.
        return {"published": False, "dry_run": True, "uri": lake.uri(LakePaths.candidates(ds)), **metadata}
    result = {"published": True, "uri": lake.uri(LakePaths.candidates(ds)), **metadata}
    table = settings.candidates.warehouse_table
    if table:
        # The lake is the source of truth; a failed load fails the task and its retry publishes the
        # same staged files again, then loads.
        from pipelines.core.warehouse import open_warehouse

        with open_warehouse(settings, credentials=lake.credentials) as warehouse:
            loaded = warehouse.load_published(table, lake, LakePaths.candidates(ds), ds, CANDIDATES)
        result["warehouse"] = {"table": table, "rows": loaded}
    return result


def read_candidates(lake: Lake, ds: dt.date) -> pa.Table:
    """All published candidate lists of ``ds``."""
    return pa.concat_tables(lake.read_parquet(path) for path in lake.manifest_files(LakePaths.candidates(ds)))
