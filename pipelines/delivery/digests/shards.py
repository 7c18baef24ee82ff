"""The digest stage: render the due users' digests shard by shard, then publish them together.

Reads ``candidates/ds=<ds>/`` (published shards, rank 1 = best); users and items come in as Arrow tables.
Writes ``digests/ds=<ds>/`` via write-audit-publish: one JSON Lines file per candidates shard
(``shard=NNN.jsonl``, one object per message, ``raw`` being the complete message) and the messages index;
the manifest's metadata holds the counts, including users skipped and why. Users are split as for the
candidates (``crc32(user_id) % num_shards``): :func:`plan_digests` opens one staging folder,
:func:`render_digest_shard` renders shard ``k`` (one mapped Airflow task each) and
:func:`publish_digests` merges the index and writes the manifest last. The sender holds each message
until its ``send_at`` and sends at once those whose time passed while the run worked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import jinja2
import pyarrow as pa

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.index import (
    MESSAGES_INDEX,
    MESSAGES_INDEX_SCHEMA,
    index_part,
    previously_sent,
)
from pipelines.delivery.digests.message import DigestMessage, check_config
from pipelines.delivery.digests.recipients import (
    SKIP_REASONS,
    Recipient,
    candidate_shard_files,
    due_recipient,
    fresh_items,
    item_lookup,
    read_ranked_items,
    user_rows,
)
from pipelines.delivery.digests.renderer import DigestRenderer, few_collections
from pipelines.delivery.digests.schedule import send_window

log = logging.getLogger(__name__)

# Errors that fail a shard rather than skip one user: a broken template, config or store.
TASK_FAILURES: tuple[type[BaseException], ...] = (jinja2.TemplateError, OSError, MemoryError, PermanentError)


@dataclass
class DigestReport:
    """What a digest run did. ``messages`` holds the rendered messages on a dry run only."""

    ds: str
    dry_run: bool
    users_total: int
    messages_written: int
    skipped: dict[str, int]
    files: list[str] = field(default_factory=list)
    manifest_uri: str | None = None
    messages: list[DigestMessage] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (a dry run's messages by user, id, subject and items; no raw messages)."""
        return {
            "ds": self.ds,
            "dry_run": self.dry_run,
            "users_total": self.users_total,
            "messages_written": self.messages_written,
            "skipped": dict(self.skipped),
            "files": list(self.files),
            "manifest_uri": self.manifest_uri,
            "seconds": round(self.seconds, 3),
            "sample": [
                {
                    "user_id": m.user_id,
                    "message_id": m.message_id,
                    "subject": m.subject,
                    "item_ids": list(m.item_ids),
                    "send_at": m.send_at.isoformat(),
                }
                for m in self.messages
            ],
        }


@dataclass
class ShardDigests:
    """What one candidates shard's digests came to; ``messages`` are kept only on a dry run."""

    shard: int
    users_total: int
    messages_written: int
    skipped: Counter[str]
    file: str | None
    seconds: float
    messages: list[DigestMessage] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The small JSON-ready part a mapped task hands to :func:`publish_digests`."""
        return {
            "shard": self.shard,
            "users_total": self.users_total,
            "messages_written": self.messages_written,
            "skipped": dict(self.skipped),
            "file": self.file,
            "seconds": round(self.seconds, 3),
        }


def plan_digests(lake: Lake, ds: dt.date, dry_run: bool = False) -> list[dict[str, Any]]:
    """One work item per published candidates shard of ``ds``, all writing into one fresh staging folder
    of ``ds``'s digests (none on a dry run).

    Raises:
        ManifestError: the candidates of ``ds`` are not published.
    """
    files = candidate_shard_files(lake, ds)
    staging = None if dry_run else lake.begin_publish(LakePaths.digests(ds))
    return [{"shard": k, "num_shards": len(files), "staging": staging} for k in range(len(files))]


def render_digest_shard(
    lake: Lake,
    ds: dt.date,
    shard: int,
    num_shards: int,
    staging: str | None,
    users: pa.Table,
    items: pa.Table,
    config: DigestConfig,
    dry_run_users: int | None = None,
) -> ShardDigests:
    """Render the digests of the users of one candidates shard (``crc32(user_id) % num_shards``).

    Writes ``shard=NNN.jsonl`` and this shard's part of the message index into ``staging``; nothing is
    visible before :func:`publish_digests`. A dry run (``staging`` None) renders up to ``dry_run_users``
    messages, writes nothing and keeps the messages.

    Args:
        lake: the lake holding ``candidates/ds=<ds>`` and earlier digests.
        ds: run date.
        shard: the candidates shard whose users to render.
        num_shards: how many candidates shards ``ds`` has.
        staging: the staging folder opened by :func:`plan_digests`; None for a dry run.
        users: users table, one row per user, with at least ``USER_COLUMNS`` (``schema.RAW_USERS`` or
            the serving ``profiles`` input; other columns are ignored).
        items: items table, one row per item, with at least ``ITEM_COLUMNS`` and optionally ``deleted``
            (``schema.RAW_ITEMS`` or the serving ``items`` input, which holds live items only).
        config: digest settings.
        dry_run_users: on a dry run, how many messages to render at most.

    Returns:
        A :class:`ShardDigests`: users, messages written, users skipped per reason and the file written.

    A user whose row breaks rendering (a value the checks let through, say) is skipped under
    ``render_error`` and named in the log; only a broken template, config or store fails the shard.

    Raises:
        ManifestError: the candidates of ``ds`` are not published.
        DigestConfigError: a bad digest config (the built-in unsubscribe secret in production).
        ValueError: bad ``ds`` or shard; a users, items or candidates table with a missing column, a null
            key or a duplicate id; a user whose candidates are in another user's shard.
    """
    check_config(config)
    dry_run = staging is None
    if dry_run and (dry_run_users is None or dry_run_users < 1):
        raise ValueError(f"a dry run needs a positive dry_run_users, got {dry_run_users}")
    started = time.perf_counter()
    files = candidate_shard_files(lake, ds)
    if num_shards != len(files) or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards}: the candidates of ds={ds} have {len(files)} shards")

    mine = user_rows(users, shard, num_shards)
    skipped: Counter[str] = Counter()
    due: dict[str, Recipient] = {}
    for user in mine:
        try:
            outcome = due_recipient(user, ds, config)
        except TASK_FAILURES:
            raise
        except Exception as exc:  # one user's bad row must not stop the night
            outcome = _skip_user(user["user_id"], ds, exc)
        if isinstance(outcome, str):
            skipped[outcome] += 1
        else:
            due[outcome.user_id] = outcome

    shard_path = files[shard]
    ranked = read_ranked_items(lake, shard_path, set(due), shard, num_shards)
    sent_before = previously_sent(lake, ds, config.previous_digest_days, set(ranked))
    lookup = item_lookup(items, pa.array([i for ids in ranked.values() for i in ids], pa.string()))
    renderer = DigestRenderer(ds, config)
    result = ShardDigests(shard, len(mine), 0, skipped, None, 0.0)
    file_name = f"{PurePosixPath(shard_path).stem}.jsonl"
    index_rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        # Each message goes to the file as soon as it is rendered: a shard's messages never sit in memory
        # together (a dry run keeps its sample instead).
        out = None if dry_run else stack.enter_context(lake.open_write(f"{staging}/{file_name}"))
        stack.enter_context(few_collections())
        for user_id in sorted(ranked):
            if dry_run and len(result.messages) >= dry_run_users:
                break
            recipient = due[user_id]
            fresh = fresh_items(ranked[user_id], sent_before.get(user_id, set()), lookup)
            if len(fresh) < config.min_fresh_candidates:
                skipped["too_few_fresh_candidates"] += 1
                continue
            try:
                message = renderer.message(
                    user_id,
                    recipient.email,
                    recipient.frequency,
                    recipient.slot,
                    fresh[: config.items_per_digest],
                )
            except TASK_FAILURES:
                raise
            except Exception as exc:  # one user's bad row must not stop the night
                skipped[_skip_user(user_id, ds, exc)] += 1
                continue
            if out is None:
                result.messages.append(message)
                continue
            line = json.dumps(message.record(), ensure_ascii=False, sort_keys=True) + "\n"
            out.write(line.encode("utf-8"))
            index_rows.append(
                {
                    "user_id": message.user_id,
                    "message_id": message.message_id,
                    "subject": message.subject,
                    "item_ids": list(message.item_ids),
                    "send_at": message.send_at,
                    "local_send_date": message.local_send_date,
                    "file": file_name,
                }
            )
    if not dry_run:
        skipped["no_candidates"] += len(set(due) - set(ranked))
        lake.write_parquet(
            f"{staging}/{index_part(shard)}", pa.Table.from_pylist(index_rows, MESSAGES_INDEX_SCHEMA)
        )
        result.file, result.messages_written = file_name, len(index_rows)
    result.seconds = time.perf_counter() - started
    cache = renderer.cache_info()
    log.info(
        "digests %s shard %d/%d: %d messages for %d users (%d due) in %.1f s; rendering CPU s %s, post cache "
        "%d hits, %d misses",
        ds,
        shard,
        num_shards,
        len(result.messages) + len(index_rows),
        len(mine),
        len(due),
        result.seconds,
        {step: round(seconds, 2) for step, seconds in renderer.seconds.items()},
        cache.hits,
        cache.misses,
    )
    return result


def _skip_user(user_id: str, ds: dt.date, exc: Exception) -> str:
    """Log why ``user_id``'s digest of ``ds`` could not be made and return the skip reason."""
    log.warning(
        "digest of user %r for ds=%s skipped (render_error): %s: %s", user_id, ds, type(exc).__name__, exc
    )
    log.debug("render_error of user %r", user_id, exc_info=exc)
    return "render_error"


def summarise_shards(ds: dt.date, shard_results: list[dict[str, Any]], dry_run: bool) -> DigestReport:
    """The night's digest counts summed over the shards' summaries (a dry run's messages are samples)."""
    skipped: Counter[str] = Counter()
    for r in shard_results:
        skipped.update(r["skipped"])
    return DigestReport(
        ds=ds.isoformat(),
        dry_run=dry_run,
        users_total=sum(r["users_total"] for r in shard_results),
        messages_written=sum(r["messages_written"] for r in shard_results),
        skipped={reason: skipped.get(reason, 0) for reason in SKIP_REASONS},
        seconds=sum(r["seconds"] for r in shard_results),
    )


def publish_digests(
    lake: Lake, ds: dt.date, staging: str, shard_results: Sequence[dict[str, Any]], config: DigestConfig
) -> DigestReport:
    """Publish ``ds``'s digests once every shard is rendered: the message index, then the manifest.

    Raises:
        DigestConfigError: a bad digest config (the built-in unsubscribe secret in production).
        ValueError: the shard results do not cover every candidates shard exactly once.
        ManifestError: a shard's files are missing from ``staging``.
    """
    check_config(config)
    results = sorted(shard_results, key=lambda r: r["shard"])
    n = len(candidate_shard_files(lake, ds))
    if [r["shard"] for r in results] != list(range(n)):
        raise ValueError(
            f"ds={ds}: digest shard results {[r['shard'] for r in results]} do not cover {n} shards"
        )
    parts = [f"{staging}/{index_part(r['shard'])}" for r in results]
    missing = [p for p in parts if not lake.exists(p)]
    if missing:
        raise ManifestError(f"cannot publish {lake.uri(LakePaths.digests(ds))}: missing {missing}")
    index = pa.concat_tables([lake.read_parquet(p) for p in parts]).cast(MESSAGES_INDEX_SCHEMA)
    lake.write_parquet(f"{staging}/{MESSAGES_INDEX}", index)
    files = [r["file"] for r in results]
    report = summarise_shards(ds, results, dry_run=False)
    skipped = report.skipped
    window_start, window_end = send_window(ds)
    dataset = LakePaths.digests(ds)
    lake.publish(
        dataset,
        staging,
        [*files, MESSAGES_INDEX],
        metadata={
            "ds": ds.isoformat(),
            "messages": report.messages_written,
            "users_total": report.users_total,
            "skipped": report.skipped,
            "send_window_utc": [window_start.isoformat(), window_end.isoformat()],
            "send_hour_local": config.send_hour_local,
            "items_per_digest": config.items_per_digest,
            "candidates_staging": lake.read_manifest(LakePaths.candidates(ds))["staging"],
            "format": "jsonl: user_id, to, message_id, subject, item_ids, send_at, local_send_date, raw",
        },
    )
    for part in parts:
        lake.rm(part)
    report.files = [lake.uri(f"{staging}/{name}") for name in files]
    report.manifest_uri = lake.uri(dataset)
    log.info(
        "digests %s: %d messages for %d users in %.1f s of shard work (%.0f messages/s); skipped %s",
        ds,
        report.messages_written,
        report.users_total,
        report.seconds,
        report.messages_written / max(report.seconds, 1e-9),
        dict(skipped),
    )
    return report
