"""Names of every table, column set and lake path Nightfeed uses: the one place they are defined.

Raw tables are the input contract (see README "Bring your own data"); their Arrow schemas below are used
by the generator, the importer, the warehouse loaders and the BigQuery table definitions alike. Derived
tables get their columns from the SQL in ``sql/`` and are listed here by name, file and partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

PARTITION_COLUMN = "ds"

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "upvote", "bookmark", "share")
ENGAGEMENT_TYPES: tuple[str, ...] = ("click", "upvote", "bookmark", "share")
POST_TYPES: tuple[str, ...] = ("article", "tutorial", "release", "discussion", "video")
CONTENT_TYPES: tuple[str, ...] = ("text", "video", "podcast", "repository")
DIGEST_FREQUENCIES: tuple[str, ...] = ("daily", "weekly")

_TS = pa.timestamp("us", tz="UTC")
_STRINGS = pa.list_(pa.string())

RAW_EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("event_ts", _TS),
        pa.field("position", pa.int64()),
        pa.field(PARTITION_COLUMN, pa.date32()),
    ]
)

RAW_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("tags", _STRINGS),
        pa.field("source", pa.string()),
        pa.field("author", pa.string()),
        pa.field("post_type", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("language", pa.string()),
        pa.field("url", pa.string()),
        pa.field("created_at", _TS),
        pa.field("deleted", pa.bool_()),
        pa.field(PARTITION_COLUMN, pa.date32()),
    ]
)

RAW_USERS = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("email", pa.string()),
        pa.field("signup_ts", _TS),
        pa.field("language", pa.string()),
        pa.field("selected_tags", _STRINGS),
        pa.field("blocked_tags", _STRINGS),
        pa.field("blocked_sources", _STRINGS),
        pa.field("digest_opt_in", pa.bool_()),
        pa.field("digest_frequency", pa.string()),
        pa.field("digest_weekday", pa.int64()),
        pa.field("timezone", pa.string()),
        pa.field(PARTITION_COLUMN, pa.date32()),
    ]
)

RAW_SCHEMAS: dict[str, pa.Schema] = {
    "raw_events": RAW_EVENTS,
    "raw_items": RAW_ITEMS,
    "raw_users": RAW_USERS,
}


@dataclass(frozen=True)
class SqlModel:
    """A table built by one SQL file in ``sql/``; ``partitioned`` tables are replaced one ``ds`` at a time."""

    name: str
    path: str
    partitioned: bool = True

    @property
    def file(self) -> Path:
        return SQL_DIR / self.path


# Feature models in dependency order: the features step runs them top to bottom for one ds.
FEATURE_MODELS: tuple[SqlModel, ...] = (
    SqlModel("checked_events", "staging/checked_events.sql"),
    SqlModel("checked_items", "staging/checked_items.sql"),
    SqlModel("checked_users", "staging/checked_users.sql"),
    SqlModel("quarantine", "quality/quarantine.sql"),
    SqlModel("stg_events", "staging/stg_events.sql"),
    SqlModel("stg_items", "staging/stg_items.sql"),
    SqlModel("stg_users", "staging/stg_users.sql"),
    SqlModel("user_features", "features/user_features.sql"),
    SqlModel("item_features", "features/item_features.sql"),
    SqlModel("retrieval_examples", "training/retrieval_examples.sql"),
    SqlModel("ranking_examples", "training/ranking_examples.sql"),
)

# Queries that are read, not materialised.
QUALITY_SUMMARY_SQL = "quality/quality_summary.sql"
RETRIEVAL_DATASET_SQL = "training/retrieval_dataset.sql"
RANKING_DATASET_SQL = "training/ranking_dataset.sql"
INTERACTIONS_SQL = "training/interactions.sql"

# The nightly snapshot: each query's rows become one Parquet file of the published ``inputs/ds=…``.
SERVING_INPUTS: dict[str, str] = {
    "users": "serving/users.sql",
    "items": "serving/items.sql",
    "seen": "serving/seen.sql",
    "profiles": "serving/profiles.sql",
}

QUARANTINE_REASONS: tuple[str, ...] = (
    "null_key",
    "unknown_user",
    "unknown_item",
    "future_timestamp",
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
