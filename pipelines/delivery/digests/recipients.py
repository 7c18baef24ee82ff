"""Who gets a digest, and with which posts: the due users of a shard and their fresh candidates.

Reads the users and items tables handed in by the caller and one published candidates shard. Users are
skipped, in this order of checks, each counted under its reason: ``opted_out``, ``invalid_email``,
``bad_timezone`` (not an IANA name), ``bad_schedule`` (unknown frequency, or weekly without a weekday
0..6), ``not_due``, ``no_candidates`` (none published for the user), ``too_few_fresh_candidates`` (fewer
than ``min_fresh_candidates`` left after dropping items already sent, deleted items and items missing
from the items table), ``render_error`` (any other error while making that user's message; logged with
the user id).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.settings import DigestConfig
from pipelines.core.tables import first_null, require_columns
from pipelines.delivery.digests.addresses import is_valid_email
from pipelines.delivery.digests.schedule import SendSlot, due_slot, send_slots

SKIP_REASONS: tuple[str, ...] = (
    "opted_out",
    "invalid_email",
    "bad_timezone",
    "bad_schedule",
    "not_due",
    "no_candidates",
    "too_few_fresh_candidates",
    "render_error",
)
USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "email",
    "digest_opt_in",
    "digest_frequency",
    "digest_weekday",
    "timezone",
)
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "summary", "tags", "source", "url")
DELETED_COLUMN = "deleted"  # optional: a catalog already limited to live items may leave it out
CANDIDATE_COLUMNS: tuple[str, ...] = ("user_id", "rank", "item_id")


@dataclass(frozen=True)
class Recipient:
    """A due user: the address, the frequency the digest names, and the slot it is sent at."""

    user_id: str
    email: str
    frequency: str
    slot: SendSlot


def user_rows(users: pa.Table, shard: int | None = None, num_shards: int = 1) -> list[dict[str, Any]]:
    """The users' rows as dicts (only those of ``shard`` when given); errors name the table's row."""
    from pipelines.serving.sharding import shard_of

    require_columns(users, USER_COLUMNS, "users table")
    row = first_null(users, "user_id")
    if row is not None:
        raise ValueError(f"users table row {row} has no user_id")
    table = users.select(list(USER_COLUMNS))
    numbers = np.arange(table.num_rows)
    if shard is not None:
        numbers = np.flatnonzero(shard_of(table.column("user_id"), num_shards) == shard)
        table = table.take(pa.array(numbers))
    rows = table.to_pylist()
    seen: dict[str, int] = {}
    for i, user in zip(numbers.tolist(), rows, strict=True):
        if user["user_id"] in seen:
            raise ValueError(
                f"users table rows {seen[user['user_id']]} and {i} share user_id {user['user_id']!r}"
            )
        seen[user["user_id"]] = i
    return rows


def due_recipient(user: dict[str, Any], ds: dt.date, config: DigestConfig) -> Recipient | str:
    """The recipient for ``user`` when due, else the skip reason."""
    if user["digest_opt_in"] is not True:
        return "opted_out"
    if not is_valid_email(user["email"]):
        return "invalid_email"
    try:
        send_slots(ds, user["timezone"] or "", config.send_hour_local)
    except ValueError:
        return "bad_timezone"
    try:
        slot = due_slot(
            ds, user["timezone"], user["digest_frequency"], user["digest_weekday"], config.send_hour_local
        )
    except ValueError:
        return "bad_schedule"
    if slot is None:
        return "not_due"
    return Recipient(user["user_id"], user["email"], user["digest_frequency"], slot)


def item_lookup(items: pa.Table, item_ids: pa.Array) -> dict[str, dict[str, Any]]:
    """Items-table rows of ``item_ids`` by id. Raises ValueError on a missing column or a duplicate id."""
    require_columns(items, ITEM_COLUMNS, "items table")
    columns = [*ITEM_COLUMNS, DELETED_COLUMN] if DELETED_COLUMN in items.column_names else list(ITEM_COLUMNS)
    wanted = items.filter(pc.is_in(items.column("item_id"), value_set=pc.unique(item_ids)))
    lookup: dict[str, dict[str, Any]] = {}
    for row in wanted.select(columns).to_pylist():
        if row["item_id"] in lookup:
            raise ValueError(f"items table has item_id {row['item_id']!r} more than once")
        lookup[row["item_id"]] = row
    return lookup


def read_ranked_items(
    lake: Lake, path: str, user_ids: set[str], shard: int, num_shards: int
) -> dict[str, list[str]]:
    """Ranked item ids per user of ``user_ids`` in candidates shard ``shard`` (duplicates dropped).

    Raises:
        ValueError: a missing column, a null key, or a user of another shard in the file.
    """
    from pipelines.serving.sharding import shard_of

    table = lake.read_parquet(path, CANDIDATE_COLUMNS, present_only=True)
    require_columns(table, CANDIDATE_COLUMNS, f"candidates shard {lake.uri(path)}")
    for column in CANDIDATE_COLUMNS:
        row = first_null(table, column)
        if row is not None:
            raise ValueError(f"candidates shard {lake.uri(path)} row {row} has a null {column}")
    listed = pc.unique(table.column("user_id")).to_pylist()
    owners = shard_of(listed, num_shards)
    if (owners != shard).any():
        stray = int(np.flatnonzero(owners != shard)[0])
        raise ValueError(
            f"user {listed[stray]!r} has candidates in {lake.uri(path)} (shard {shard} of {num_shards}) "
            f"but belongs to shard {owners[stray]}"
        )
    table = table.filter(pc.is_in(table.column("user_id"), value_set=pa.array(sorted(user_ids), pa.string())))
    table = table.sort_by([("user_id", "ascending"), ("rank", "ascending"), ("item_id", "ascending")])
    if table.num_rows == 0:
        return {}
    users = table.column("user_id").combine_chunks()
    starts = np.flatnonzero(np.r_[True, pc.not_equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False)])
    ends = np.r_[starts[1:], len(users)].tolist()
    items = table.column("item_id").to_pylist()
    names = users.take(pa.array(starts)).to_pylist()
    # dict.fromkeys keeps each post's first (best) place.
    return {
        user_id: list(dict.fromkeys(items[start:end]))
        for user_id, start, end in zip(names, starts.tolist(), ends, strict=True)
    }


def fresh_items(ranked: list[str], sent: set[str], lookup: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The items-table rows of ``ranked``, in order, without items already ``sent``, unknown or deleted."""
    return [
        lookup[item_id]
        for item_id in ranked
        if item_id not in sent and item_id in lookup and lookup[item_id].get(DELETED_COLUMN) is not True
    ]


def candidate_shard_files(lake: Lake, ds: dt.date) -> list[str]:
    """The published candidate shard files of ``ds``, file ``k`` being shard ``k``."""
    files = lake.manifest_files(LakePaths.candidates(ds))
    names = [PurePosixPath(f).name for f in files]
    expected = [LakePaths.shard_file(k) for k in range(len(files))]
    if names != expected:
        raise ValueError(f"{lake.uri(LakePaths.candidates(ds))}: shard files {names}, expected {expected}")
    return files
