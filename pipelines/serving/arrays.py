"""Integer array helpers of the serving path: index ranges of flat (CSR-style) lists and sorted unique
keys."""

from __future__ import annotations

import numpy as np


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + n) for s, n in zip(starts, lengths))``."""
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of an integer array; a plain sort is many times faster than its hashing."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values
