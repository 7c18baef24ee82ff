"""Preview of one user's digest: its HTML body written to a local file for a person to look at.

Reads the published candidates of ``ds`` and the messages index of earlier digests; used by the
``digest-preview`` command and the Airflow candidates view.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from pipelines.core.errors import UserError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import DIGEST_FREQUENCIES
from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.index import previously_sent
from pipelines.delivery.digests.message import check_config
from pipelines.delivery.digests.recipients import (
    candidate_shard_files,
    fresh_items,
    item_lookup,
    read_ranked_items,
    user_rows,
)
from pipelines.delivery.digests.renderer import DigestRenderer
from pipelines.delivery.digests.schedule import due_slot, send_slots


class PreviewError(UserError, ValueError):
    """The user asked for has no digest to preview: unknown, or without fresh candidates."""


def preview_digest(
    lake: Lake,
    ds: dt.date,
    user_id: str,
    users: pa.Table,
    items: pa.Table,
    config: DigestConfig,
    out_path: str | Path,
) -> Path:
    """Write the HTML body of one user's digest for ``ds`` to ``out_path`` for a person to look at.

    Works for users who are not due, opted out or below ``min_fresh_candidates``: it shows the fresh
    candidates they have. The date is their due slot, else their first slot in the window (UTC when
    their timezone is invalid); the frequency shown is theirs, ``daily`` when unknown.

    Args:
        lake: the lake holding ``candidates/ds=<ds>``.
        ds: run date.
        user_id: the user to preview.
        users: users table, as for :func:`~pipelines.delivery.digests.shards.render_digest_shard`.
        items: items table, as for :func:`~pipelines.delivery.digests.shards.render_digest_shard`.
        config: digest settings.
        out_path: local path of the HTML file to write.

    Returns:
        ``out_path`` as a Path.

    Raises:
        PreviewError: the user is not in ``users`` or has no fresh candidates in ``ds``.
        DigestConfigError: a bad digest config.
        ManifestError: the candidates of ``ds`` are not published.
    """
    from pipelines.serving.sharding import shard_of

    check_config(config)
    user = next((row for row in user_rows(users) if row["user_id"] == user_id), None)
    if user is None:
        raise PreviewError(f"user {user_id!r} is not in the users table of ds={ds}", hint="check the user id")
    try:
        slots = send_slots(ds, user["timezone"] or "", config.send_hour_local)
    except ValueError:
        slots = send_slots(ds, "UTC", config.send_hour_local)
    try:
        slot = due_slot(
            ds, user["timezone"], user["digest_frequency"], user["digest_weekday"], config.send_hour_local
        )
    except ValueError:
        slot = None
    slot = slot or slots[0]
    frequency = user["digest_frequency"] if user["digest_frequency"] in DIGEST_FREQUENCIES else "daily"

    files = candidate_shard_files(lake, ds)
    shard = int(shard_of([user_id], len(files))[0])
    ranked = read_ranked_items(lake, files[shard], {user_id}, shard, len(files)).get(user_id, [])
    sent = previously_sent(lake, ds, config.previous_digest_days, {user_id}).get(user_id, set())
    fresh = fresh_items(ranked, sent, item_lookup(items, pa.array(ranked, pa.string())))
    if not fresh:
        raise PreviewError(
            f"user {user_id!r} has no fresh candidates in {lake.uri(LakePaths.candidates(ds))}"
        )
    renderer = DigestRenderer(ds, config)
    _, _, html = renderer.bodies(user_id, frequency, slot, fresh[: config.items_per_digest])
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
