"""Table names, vocabularies and schemas Nightfeed uses: the one place each is defined.

Raw tables are the input contract (``sql/sources/*.yml``, README "Bring your own data"); their Arrow schemas
are read from those contracts and used by the generator, the importer, the warehouse loaders and the
BigQuery table definitions alike. Derived tables and queries get their columns from their contracts in
``sql/`` (see :mod:`pipelines.core.sql_catalog`).
"""

from __future__ import annotations

import pyarrow as pa

from pipelines.core.sql_catalog import load_catalog

PARTITION_COLUMN = "ds"

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "upvote", "bookmark", "share")
ENGAGEMENT_TYPES: tuple[str, ...] = ("click", "upvote", "bookmark", "share")
POST_TYPES: tuple[str, ...] = ("article", "tutorial", "release", "discussion", "video")
CONTENT_TYPES: tuple[str, ...] = ("text", "video", "podcast", "repository")
DIGEST_FREQUENCIES: tuple[str, ...] = ("daily", "weekly")

RAW_SCHEMAS: dict[str, pa.Schema] = {
    name: source.arrow_schema() for name, source in load_catalog().sources.items()
}
RAW_EVENTS = RAW_SCHEMAS["raw_events"]
RAW_ITEMS = RAW_SCHEMAS["raw_items"]
RAW_USERS = RAW_SCHEMAS["raw_users"]

# Queries that are read, not materialised: names in the SQL catalog (``sql/queries/<name>.sql``).
QUALITY_SUMMARY = "quality/quality_summary"
QUARANTINE_ROWS = "quality/quarantine_rows"
RAW_EVENT_DAYS = "quality/raw_event_days"
RETRIEVAL_DATASET = "training/retrieval_dataset"
RANKING_DATASET = "training/ranking_dataset"

# The nightly snapshot: each query's rows become one Parquet file of the published ``inputs/ds=…``.
SERVING_INPUTS: dict[str, str] = {
    "users": "serving/users",
    "items": "serving/items",
    "seen": "serving/seen",
    "profiles": "serving/profiles",
    "interactions": "serving/interactions",
}

QUARANTINE_REASONS: tuple[str, ...] = (
    "null_key",
    "unknown_user",
    "unknown_item",
    "future_timestamp",
    "out_of_range",
    "malformed_value",
    "duplicate",
)

CANDIDATES = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("item_id", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("retrieval_score", pa.float32()),
        pa.field("reason", pa.string()),
    ]
)
