"""The most-popular baseline: every user gets the posts most users engaged with in a recent window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.training.interactions import interaction_matrix


def popularity_scores(
    interactions: pa.Table, item_ids: pa.Array, as_of: dt.datetime, window_days: int | None
) -> np.ndarray:
    """Distinct users who engaged with each post of ``item_ids`` in the ``window_days`` before ``as_of``.

    Args:
        interactions: ``user_id, item_id, event_ts`` engagements.
        item_ids: the catalog, in the order of the returned scores.
        as_of: the end of the window (exclusive).
        window_days: the window's length; None counts everything before ``as_of``.

    Raises:
        ValueError: a window shorter than a day.
    """
    if window_days is not None and window_days < 1:
        raise ValueError(f"window_days must be at least 1 or None, got {window_days}")
    since = as_of - dt.timedelta(days=window_days) if window_days else None
    matrix = interaction_matrix(interactions, item_ids, since=since, before=as_of).binary()
    return np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)
