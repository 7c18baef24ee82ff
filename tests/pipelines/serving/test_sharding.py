"""The shard rule: the vectorised CRC-32 is zlib's, byte for byte, for every kind of id."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from pipelines.serving.sharding import crc32_of, shard_of

IDS = ["", "a", "a", "u0000001", "héllo wörld", "ユーザー", "x" * 300, "a", "🙂‍↔️", "b"]


def test_the_checksum_is_zlibs_for_empty_repeated_unicode_and_long_ids() -> None:
    assert crc32_of(IDS).tolist() == [zlib.crc32(u.encode()) for u in IDS]


def test_a_null_id_counts_as_the_empty_string_and_chunks_and_slices_do_not_matter() -> None:
    column = pa.chunked_array([pa.array(IDS[:4]), pa.array([None, *IDS[4:]])])
    assert crc32_of(column).tolist() == [zlib.crc32(u.encode()) for u in [*IDS[:4], "", *IDS[4:]]]
    sliced = pa.array(IDS).slice(3, 4)
    assert crc32_of(sliced).tolist() == [zlib.crc32(u.encode()) for u in IDS[3:7]]
    assert crc32_of(pa.chunked_array([], pa.string())).tolist() == []


def test_shards_split_users_stably_and_evenly() -> None:
    ids = [f"u{i:07d}" for i in range(1000)]
    shards = shard_of(pa.array(ids), 8)
    assert shards.tolist() == [zlib.crc32(u.encode()) % 8 for u in ids]
    assert np.array_equal(shards, shard_of(ids, 8))
    assert np.bincount(shards).min() > 60  # roughly even: 125 expected per shard
