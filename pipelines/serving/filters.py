"""Which posts a user may be shown: not seen, not in a blocked source, without a blocked tag, in the user's
language or English, and not older than the served system allows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipelines.serving.arrays import concat_ranges

if TYPE_CHECKING:
    from pipelines.serving.batch import UserBatch
    from pipelines.serving.context import ServingContext

ENGLISH = "en"


def allowed(ctx: ServingContext, batch: UserBatch, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which (user, post) pairs may be shown: ``rows[i]`` is a user row, ``positions[i, j]`` a post row.

    A post is out when it was already seen, is in a blocked source or has a blocked tag, is in a language
    other than the user's and English, or is too old for the system. Negative positions (padding) are out.
    """
    p = np.maximum(positions, 0)
    language = ctx.listed_language[p]
    ok = (language == batch.language[rows][:, None]) | (language == ctx.languages[ENGLISH])
    ok &= positions >= 0
    ok &= ~batch.has_seen(rows, p)
    # Blocks are rare: only the rows of users with some are looked at, with one sorted-key lookup of
    # every (user, source) and (user, post tag) pair against the users' blocked codes.
    blocking = np.flatnonzero(batch.blocked_sources.lengths[rows] > 0)
    if len(blocking):
        width = ctx.source_width
        keys = rows[blocking][:, None] * width + ctx.item_source[p[blocking]]
        ok[blocking] &= ~_contains(batch.blocked_sources.keys(width), keys)
    blocking = np.flatnonzero(batch.blocked_tags.lengths[rows] > 0)
    if len(blocking):
        width = ctx.tag_width
        items = p[blocking].ravel()
        starts, lengths = ctx.tag_indptr[items], ctx.tag_indptr[items + 1] - ctx.tag_indptr[items]
        pair = np.repeat(np.arange(len(items)), lengths)
        owner = np.repeat(rows[blocking], p.shape[1])[pair]
        hit = _contains(
            batch.blocked_tags.keys(width), owner * width + ctx.tag_codes[concat_ranges(starts, lengths)]
        )
        tagged = np.bincount(pair[hit], minlength=len(items)) > 0
        ok[blocking] &= ~tagged.reshape(len(blocking), p.shape[1])
    return ok


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in the sorted unique array ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(np.shape(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys
