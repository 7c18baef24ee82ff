"""Engagement logs as a sparse user x post matrix: what the collaborative baselines learn from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipelines.core.tables import require_columns, row_numbers

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_ts")


@dataclass(frozen=True)
class InteractionMatrix:
    """Engagement counts: row ``u`` is ``user_ids[u]``, column ``j`` is ``item_ids[j]``."""

    user_ids: pa.Array
    item_ids: pa.Array
    counts: sp.csr_matrix

    def binary(self) -> sp.csr_matrix:
        """1 where the user engaged with the post at least once."""
        out = self.counts.copy()
        out.data[:] = 1.0
        return out


def interaction_matrix(
    interactions: pa.Table,
    item_ids: pa.Array,
    user_ids: pa.Array | None = None,
    since: dt.datetime | None = None,
    before: dt.datetime | None = None,
) -> InteractionMatrix:
    """Count each user's engagements with each post of ``item_ids`` in ``[since, before)``.

    Args:
        interactions: ``user_id, item_id, event_ts`` rows, one per engagement, or with ``n_events``
            engagements each (``event_ts`` is then the last of them).
        item_ids: the columns (distinct); engagements with other posts are left out.
        user_ids: the rows (distinct); None: every user with an engagement kept, in sorted order.
        since: first instant counted (None: no bound).
        before: first instant not counted (None: no bound).

    Raises:
        ValueError: a missing column.
    """
    require_columns(interactions, INTERACTION_COLUMNS, "interactions")
    item_ids = item_ids.combine_chunks() if isinstance(item_ids, pa.ChunkedArray) else item_ids
    ts = interactions.column("event_ts")
    keep = pc.is_valid(interactions.column("user_id"))
    if since is not None:
        keep = pc.and_(keep, pc.greater_equal(ts, pa.scalar(since, ts.type)))
    if before is not None:
        keep = pc.and_(keep, pc.less(ts, pa.scalar(before, ts.type)))
    rows = interactions.filter(keep)
    item = row_numbers(rows.column("item_id"), item_ids, unique=True)
    rows, item = rows.filter(pa.array(item >= 0)), item[item >= 0]
    if user_ids is None:
        user_ids = pc.unique(rows.column("user_id")).sort()
    user_ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    user = row_numbers(rows.column("user_id"), user_ids, unique=True)
    known = user >= 0
    weights = (
        pc.cast(rows.column("n_events"), pa.float32()).to_numpy(zero_copy_only=False)
        if "n_events" in rows.column_names
        else np.ones(rows.num_rows, np.float32)
    )
    counts = sp.csr_matrix((weights[known], (user[known], item[known])), shape=(len(user_ids), len(item_ids)))
    counts.sum_duplicates()
    return InteractionMatrix(user_ids, item_ids, counts)
