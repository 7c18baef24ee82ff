"""Digest test helpers: users, items and published candidates in a temporary lake, the whole digest stage
in one process, and reading back what it published.
"""

from __future__ import annotations

import datetime as dt
import email
import json
import logging
from collections import Counter
from email import policy
from typing import Any

import pyarrow as pa

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES, RAW_ITEMS, RAW_USERS
from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.message import check_config
from pipelines.delivery.digests.recipients import SKIP_REASONS
from pipelines.delivery.digests.shards import (
    DigestReport,
    plan_digests,
    publish_digests,
    render_digest_shard,
)

log = logging.getLogger(__name__)

UTC = dt.UTC
DS = dt.date(
    2026, 3, 7
)  # a Saturday; its run prepares the slots in [Sun 2026-03-08 00:00Z, Mon 03-09 00:00Z)
USERS_SCHEMA = pa.schema([f for f in RAW_USERS if f.name != "ds"])
ITEMS_SCHEMA = pa.schema([f for f in RAW_ITEMS if f.name != "ds"])
CONFIG = DigestConfig(items_per_digest=3, min_fresh_candidates=3)


def user(user_id: str, **over: Any) -> dict[str, Any]:
    row = {
        "user_id": user_id,
        "email": f"{user_id}@example.com",
        "signup_ts": dt.datetime(2026, 1, 1, tzinfo=UTC),
        "language": "en",
        "selected_tags": ["python"],
        "blocked_tags": [],
        "blocked_sources": [],
        "digest_opt_in": True,
        "digest_frequency": "daily",
        "digest_weekday": 0,
        "timezone": "UTC",
    }
    row.update(over)
    return row


def item(item_id: str, **over: Any) -> dict[str, Any]:
    row = {
        "item_id": item_id,
        "title": f"Title of {item_id}",
        "summary": f"Summary of {item_id}.",
        "tags": ["python", "databases"],
        "source": "source-001",
        "author": "author-1",
        "post_type": "article",
        "content_type": "text",
        "language": "en",
        "url": f"https://posts.example/{item_id}",
        "created_at": dt.datetime(2026, 3, 1, tzinfo=UTC),
        "deleted": False,
    }
    row.update(over)
    return row


def users_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, USERS_SCHEMA)


def items_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, ITEMS_SCHEMA)


def publish_candidates(lake: Lake, ds: str, shards: list[list[tuple[str, int, str]]]) -> None:
    """Publish (user_id, rank, item_id) rows per shard the way the candidates stage does."""
    dataset = LakePaths.candidates(ds)
    staging = lake.begin_publish(dataset)
    files = []
    for shard, rows in enumerate(shards):
        table = pa.Table.from_pylist(
            [
                {
                    "user_id": u,
                    "rank": r,
                    "item_id": i,
                    "score": 1.0 / r,
                    "retrieval_score": 0.5,
                    "reason": "x",
                }
                for u, r, i in rows
            ],
            CANDIDATES,
        )
        name = LakePaths.shard_file(shard)
        lake.write_parquet(f"{staging}/{name}", table)
        files.append(name)
    lake.publish(dataset, staging, files)


def published_records(lake: Lake, ds: str) -> list[dict[str, Any]]:
    records = []
    for path in lake.manifest_files(LakePaths.digests(ds)):
        if path.endswith(".jsonl"):
            records += [json.loads(line) for line in lake.read_bytes(path).decode().splitlines()]
    return records


def parse(raw: str) -> email.message.EmailMessage:
    return email.message_from_bytes(raw.encode("ascii"), policy=policy.default)


def world(tmp_path) -> tuple[Lake, pa.Table, pa.Table]:
    lake = Lake(str(tmp_path / "lake"))
    users = users_table(
        [
            user("u01"),  # daily, UTC: due at Sun 07:00Z
            user("u02", digest_opt_in=False),
            user("u03", email="not an address"),
            user("u04", timezone="Mars/Olympus_Mons"),
            user("u05", digest_frequency="hourly"),
            user("u06", digest_frequency="weekly", digest_weekday=0),  # Monday; UTC sends Sunday
            user("u07"),  # due, no candidates
            user("u08"),  # due, only 2 fresh candidates
            user("u09", digest_frequency="weekly", digest_weekday=0, timezone="Pacific/Kiritimati"),
            user("u10", digest_opt_in=None),
        ]
    )
    items = items_table([item(f"i{n:02d}", deleted=n == 9) for n in range(1, 13)])
    publish_candidates(
        lake,
        DS,
        [
            # Users are in shard crc32(user_id) % 2: u01, u02, u08, u09 in shard 0; u06 in shard 1.
            [
                # u01 in shuffled row order; i09 is deleted and i99 unknown, so the top 3 are i03, i01, i02.
                ("u01", 4, "i02"),
                ("u01", 1, "i03"),
                ("u01", 3, "i09"),
                ("u01", 2, "i01"),
                ("u01", 5, "i99"),
                ("u01", 6, "i04"),
                ("u02", 1, "i01"),
                ("u02", 2, "i02"),
                ("u02", 3, "i03"),
                # u08: i01, i02 fresh, i09 deleted -> 2 < 3. u09: i05, i06, i07 of four.
                ("u08", 1, "i01"),
                ("u08", 2, "i09"),
                ("u08", 3, "i02"),
                ("u09", 1, "i05"),
                ("u09", 2, "i06"),
                ("u09", 3, "i07"),
                ("u09", 4, "i08"),
            ],
            [
                ("u06", 1, "i10"),
                ("u06", 2, "i11"),
                ("u06", 3, "i12"),
            ],
        ],
    )
    return lake, users, items


def render_and_publish_digests(
    lake: Lake,
    ds: dt.date,
    users: pa.Table,
    items: pa.Table,
    config: DigestConfig,
    dry_run_users: int | None = None,
) -> DigestReport:
    """The whole digest stage of ``ds`` in this process, shard after shard: :func:`plan_digests`,
    :func:`render_digest_shard` for each shard and :func:`publish_digests`, as the CLI and the nightly DAG
    run them through the digest jobs. With ``dry_run_users``, render that many due users' digests across
    the shards, publish nothing and return the messages in the report.

    Raises:
        ManifestError: the candidates of ``ds`` are not published, or an earlier digest lacks its index.
        ValueError: bad ``ds``, ``dry_run_users`` or config; a users, items or candidates table with a
            missing column, a null key or a duplicate id; a user in another user's shard.
    """
    check_config(config)
    if dry_run_users is not None and dry_run_users < 1:
        raise ValueError(f"dry_run_users must be a positive count or None, got {dry_run_users}")
    dry_run = dry_run_users is not None
    plan = plan_digests(lake, ds, dry_run=dry_run)
    if not dry_run:
        shards = [
            render_digest_shard(lake, ds, p["shard"], p["num_shards"], p["staging"], users, items, config)
            for p in plan
        ]
        return publish_digests(lake, ds, plan[0]["staging"], [s.summary() for s in shards], config)
    report = DigestReport(ds=ds.isoformat(), dry_run=True, users_total=0, messages_written=0, skipped={})
    skipped: Counter[str] = Counter()
    for p in plan:
        left = dry_run_users - len(report.messages)
        if left <= 0:
            break
        shard = render_digest_shard(lake, ds, p["shard"], p["num_shards"], None, users, items, config, left)
        report.messages.extend(shard.messages)
        report.users_total += shard.users_total
        report.seconds += shard.seconds
        skipped.update(shard.skipped)
    report.skipped = {reason: skipped.get(reason, 0) for reason in SKIP_REASONS}
    log.info("digests %s dry run: rendered %d messages in %.1f s", ds, len(report.messages), report.seconds)
    return report
