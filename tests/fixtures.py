"""Small explicit raw-table fixtures: rows are written out in full where a test reads them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from pipelines.core.schema import RAW_SCHEMAS


def ts(value: str) -> dt.datetime:
    """``'2026-11-20 08:00'`` -> an aware UTC datetime."""
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def day(value: str | dt.date) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


_DEFAULTS: dict[str, dict[str, Any]] = {
    "raw_items": {
        "summary": "a summary",
        "tags": ["python"],
        "source": "source-a",
        "author": "author-a",
        "post_type": "article",
        "content_type": "text",
        "language": "en",
        "url": "https://posts.example/x",
        "deleted": False,
    },
    "raw_users": {
        "email": "reader@example.com",
        "language": "en",
        "selected_tags": ["python"],
        "blocked_tags": [],
        "blocked_sources": [],
        "digest_opt_in": True,
        "digest_frequency": "daily",
        "digest_weekday": 0,
        "timezone": "UTC",
    },
    "raw_events": {"position": 0},
}


def raw(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """A raw table from partial rows: columns left out take the defaults above."""
    schema = RAW_SCHEMAS[table]
    full = [{**_DEFAULTS[table], **row} for row in rows]
    return pa.Table.from_pylist(full, schema=schema)


def event(event_id: str, user: str, item: str, kind: str, when: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "event_type": kind,
        "event_ts": ts(when),
        "ds": day(when[:10]),
        **extra,
    }


def item(item_id: str, created: str, arrived: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "title": f"Post {item_id}",
        "created_at": ts(created),
        "ds": day(arrived or created[:10]),
        **extra,
    }


def user(user_id: str, signup: str, arrived: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"user_id": user_id, "signup_ts": ts(signup), "ds": day(arrived or signup[:10]), **extra}


def load(warehouse: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Load partial rows into ``table``, one ds partition at a time."""
    tbl = raw(table, rows)
    for ds in sorted({r["ds"] for r in rows}):
        part = tbl.filter(pa.compute.equal(tbl["ds"], pa.scalar(ds, pa.date32())))
        warehouse.load_raw(table, part, ds)


def candidate_rows(rows: list[tuple[str, int, str, float]]) -> pa.Table:
    """Candidate-list rows ``(user_id, rank, item_id, score)`` with the published schema."""
    from pipelines.core.schema import CANDIDATES

    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "rank": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "score": [r[3] for r in rows],
            "retrieval_score": [r[3] / 2 for r in rows],
            "reason": ["ranked"] * len(rows),
        },
        schema=CANDIDATES,
    )


def publish_shards(lake: Any, dataset: str, shards: list[pa.Table]) -> None:
    """Publish ``shards`` as the files of lake ``dataset``, the way the nightly job does."""
    staging = lake.begin_publish(dataset)
    names = [f"shard={i:03d}.parquet" for i in range(len(shards))]
    for name, rows in zip(names, shards, strict=True):
        lake.write_parquet(f"{staging}/{name}", rows)
    lake.publish(dataset, staging, names)
