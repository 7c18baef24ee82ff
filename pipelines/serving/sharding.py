"""The shard rule: user ``u`` belongs to shard ``crc32(utf-8 u) % num_shards``, a hash that is stable across
runs, machines and Python versions. CRC-32 (zlib's) is computed for a whole Arrow column at once, byte
position by byte position, so a million ids take a fraction of a second."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _crc_table() -> np.ndarray:
    """The byte table of the reflected CRC-32 polynomial 0xEDB88320 (zlib's)."""
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(0xEDB88320), crc >> 1).astype(np.uint32)
    return crc


_CRC_TABLE = _crc_table()


def crc32_of(values: pa.Array | pa.ChunkedArray | list[str] | np.ndarray) -> np.ndarray:
    """``zlib.crc32`` of the UTF-8 bytes of each string (a null counts as the empty string).

    Args:
        values: strings, as an Arrow string column or a Python sequence.

    Returns:
        ``(n,)`` uint32 checksums.
    """
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(list(values), pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    if len(values) == 0:
        return np.zeros(0, np.uint32)
    values = pc.fill_null(values, "")
    # Each run of equal neighbours once: the seen pairs, ordered by user, repeat every id ~30 times.
    changed = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1)).to_numpy(zero_copy_only=False)
    heads = np.flatnonzero(np.concatenate([[True], changed]))
    crc = _crc32_each(values.take(pa.array(heads)).cast(pa.large_string()))
    return np.repeat(crc, np.diff(np.append(heads, len(values))))


def _crc32_each(strings: pa.LargeStringArray) -> np.ndarray:
    start = strings.offset
    offsets = np.frombuffer(strings.buffers()[1], np.int64)[start : start + len(strings) + 1]
    data = strings.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    # Longest first, so the strings still running at byte ``pos`` are always a prefix.
    order = np.argsort(-lengths, kind="stable")
    starts, lengths = offsets[:-1][order], lengths[order]
    crc = np.full(len(order), 0xFFFFFFFF, np.uint32)
    for pos in range(int(lengths[0]) if len(lengths) else 0):
        running = int(np.searchsorted(-lengths, -pos))  # strings longer than ``pos`` bytes
        head = crc[:running]
        crc[:running] = _CRC_TABLE[(head ^ data[starts[:running] + pos]) & 0xFF] ^ (head >> 8)
    out = np.empty_like(crc)
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def shard_of(user_ids: pa.Array | pa.ChunkedArray | list[str] | np.ndarray, num_shards: int) -> np.ndarray:
    """The shard of each user: ``crc32(utf-8 id) % num_shards``, stable everywhere.

    Raises:
        ValueError: ``num_shards`` below 1.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    return (crc32_of(user_ids) % np.uint32(num_shards)).astype(np.int64)
