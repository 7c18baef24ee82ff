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
    positions = np.concatenate([first, second], axis=1).astype(np.int64)
    score = np.concatenate(
        [
            np.broadcast_to((1.0 - weight) / (RRF_K + np.arange(1, first.shape[1] + 1)), first.shape),
            np.broadcast_to(weight / (RRF_K + np.arange(1, second.shape[1] + 1)), second.shape),
        ],
        axis=1,
    )
    # Row by row in catalog order: a post in both lists sits next to itself, the first list's entry first
    # (each retriever lists a post once). Its second entry's share goes to the first, which stays.
    # (position, list) keys are distinct within a row (padding aside), so an unstable sort is exact.
    source = np.repeat(np.array([0, 1], np.int64), [first.shape[1], second.shape[1]])
    by_position = np.argsort(positions * 2 + source, axis=1)
    positions = np.take_along_axis(positions, by_position, axis=1)
    score = np.take_along_axis(score, by_position, axis=1)
    repeat = positions[:, 1:] == positions[:, :-1]
    score[:, :-1] += np.where(repeat, score[:, 1:], 0.0)
    score[:, 1:][repeat] = -np.inf
    score[positions < 0] = -np.inf
    # Best first; equal scores keep catalog order (a stable sort).
    best = np.argsort(-score, axis=1, kind="stable")[:, :top_n]
    out_positions = np.take_along_axis(positions, best, axis=1)
    out_scores = np.take_along_axis(score, best, axis=1).astype(np.float32)
    out_positions[np.isneginf(out_scores)] = -1
    if out_positions.shape[1] < top_n:
        pad = top_n - out_positions.shape[1]
        out_positions = np.pad(out_positions, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
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
