"""The messages index of the published digests, and what each user was sent before.

``digests/ds=<ds>/messages.parquet`` holds one row per message (user, message id, subject, item ids, send
time, file); each shard writes its part into the staging folder and publishing merges them. The indexes
of the ``previous_digest_days`` run dates before ``ds`` tell which items a user was already sent, so no
item is sent twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths

MESSAGES_INDEX = "messages.parquet"
MESSAGES_INDEX_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("message_id", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("item_ids", pa.list_(pa.string())),
        pa.field("send_at", pa.timestamp("us", tz="UTC")),
        pa.field("local_send_date", pa.date32()),
        pa.field("file", pa.string()),
    ]
)


def index_part(shard: int) -> str:
    """The file name of shard ``shard``'s part of the index in the staging folder (removed on publishing)."""
    return f"_index-{LakePaths.shard_file(shard)}"


def previously_sent(lake: Lake, ds: dt.date, days: int, user_ids: set[str]) -> dict[str, set[str]]:
    """Item ids in the published digests of the ``days`` run dates before ``ds``, per user."""
    sent: dict[str, set[str]] = defaultdict(set)
    run_date = ds
    wanted = pa.array(sorted(user_ids), pa.string())
    for back in range(1, days + 1):
        dataset = LakePaths.digests(run_date - dt.timedelta(days=back))
        try:
            manifest = lake.read_manifest(dataset)
        except ManifestError:
            continue
        if MESSAGES_INDEX not in manifest["files"]:
            raise ManifestError(f"{lake.uri(dataset)} is published without {MESSAGES_INDEX}")
        index = lake.read_parquet(
            f"{dataset}/run={manifest['staging']}/{MESSAGES_INDEX}", ["user_id", "item_ids"]
        )
        index = index.filter(pc.is_in(index.column("user_id"), value_set=wanted))
        for user_id, item_ids in zip(
            index.column("user_id").to_pylist(), index.column("item_ids").to_pylist(), strict=True
        ):
            sent[user_id].update(item_ids or [])
    return sent
