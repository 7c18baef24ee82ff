"""A blend of two retrievers: their top-N lists fused by weighted reciprocal rank.

A post's blended score is ``(1 - w) / (K + r1) + w / (K + r2)``, with ``r1`` and ``r2`` its 1-based ranks
in the two retrievers' lists (a post missing from a list adds nothing for it) and ``K`` = 60, the usual
constant of reciprocal rank fusion. Ranks, not scores, are fused, so a two-tower's cosines and ALS inner
products or engagement counts need no common scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.serving.retrievers import Retriever

RRF_K = 60.0


def fuse_ranks(
    first: np.ndarray, second: np.ndarray, weight: float, top_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse two retrievals of the same users by weighted reciprocal rank.

    Args:
        first: ``(users, n1)`` catalog positions, best first, padded with -1.
        second: ``(users, n2)`` the same from the other retriever.
        weight: ``w``, the second retriever's weight (the first's is ``1 - w``).
        top_n: posts kept per user.

    Returns:
        ``(users, top_n)`` positions (padded with -1) and blended scores (-inf for padding), best first;
        ties go to the lower catalog position, so the result does not depend on the order of equal ranks.
    """
    n_users = len(first)
    positions = np.concatenate([first, second], axis=1).astype(np.int64)
    score = np.concatenate(
        [
            np.broadcast_to((1.0 - weight) / (RRF_K + np.arange(1, first.shape[1] + 1)), first.shape),
            np.broadcast_to(weight / (RRF_K + np.arange(1, second.shape[1] + 1)), second.shape),
        ],
        axis=1,
    )
    user = np.repeat(np.arange(n_users), positions.shape[1])
    flat, contribution = positions.ravel(), score.ravel()
    valid = flat >= 0
    user, flat, contribution = user[valid], flat[valid], contribution[valid]
    width = int(flat.max(initial=-1)) + 1
    keys, inverse = np.unique(user * width + flat, return_inverse=True)
    summed = np.bincount(inverse, weights=contribution, minlength=len(keys))
    key_user, key_position = keys // max(width, 1), keys % max(width, 1)
    order = np.lexsort((key_position, -summed, key_user))
    key_user, key_position, summed = key_user[order], key_position[order], summed[order]
    starts = np.searchsorted(key_user, np.arange(n_users))
    slot = np.arange(len(key_user)) - starts[key_user]
    keep = slot < top_n
    out_positions = np.full((n_users, top_n), -1, np.int64)
    out_scores = np.full((n_users, top_n), -np.inf, np.float32)
    out_positions[key_user[keep], slot[keep]] = key_position[keep]
    out_scores[key_user[keep], slot[keep]] = summed[keep]
    return out_positions, out_scores


@dataclass
class BlendRetriever:
    """Two retrievers' lists fused by weighted reciprocal rank (see the module docstring); each retrieves
    ``top_n`` posts and the blend keeps the best ``top_n`` of their union."""

    first: Retriever
    second: Retriever
    weight: float

    def queries(self, users: Any) -> tuple[Any, Any]:
        return self.first.queries(users), self.second.queries(users)

    def search(self, queries: tuple[Any, Any], top_n: int) -> tuple[np.ndarray, np.ndarray]:
        first, _ = self.first.search(queries[0], top_n)
        second, _ = self.second.search(queries[1], top_n)
        return fuse_ranks(first, second, self.weight, top_n)
