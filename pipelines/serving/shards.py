"""User shards: users go to shard ``crc32(user_id) % num_shards``, a hash that is stable across runs,
machines and Python versions; the published candidate lists are one file per shard."""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import pyarrow as pa

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths


def shard_of(user_ids: np.ndarray | list[str], num_shards: int) -> np.ndarray:
    """The shard of each user: ``crc32(utf-8 id) % num_shards``, stable everywhere."""
    return np.fromiter(
        (zlib.crc32(u.encode()) % num_shards for u in user_ids), dtype=np.int64, count=len(user_ids)
    )


def read_candidates(lake: Lake, ds: dt.date) -> pa.Table:
    """All published candidate lists of ``ds``."""
    return pa.concat_tables(lake.read_parquet(path) for path in lake.manifest_files(LakePaths.candidates(ds)))
