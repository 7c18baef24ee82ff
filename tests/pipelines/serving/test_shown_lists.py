"""Scores of the shown lists: the exploration post takes the score of the slot above it, or the best of
its list when it comes first, and 0 when it is alone; scores never increase down a list."""

from __future__ import annotations

import numpy as np

from pipelines.serving.diversify import CandidateLists, DiversifiedLists
from pipelines.serving.lists import _shown_lists


def test_the_exploration_post_is_scored_from_its_neighbours_in_every_list_at_once() -> None:
    # Candidates of three users: u0 [5.0, 4.0, 3.0], u1 [2.0, 9.0], u2 [7.0].
    lists = CandidateLists(
        np.array([0, 3, 5, 6]), np.array([10, 11, 12, 20, 21, 30]), np.array([5.0, 4.0, 3.0, 2.0, 9.0, 7.0])
    )
    retrieval = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.7])
    # u0: explore at slot 2 -> [p0, explore, p1, p2]; u1: explore first -> [explore, p1, p0];
    # u2: the exploration post alone.
    chosen = DiversifiedLists(
        indptr=np.array([0, 4, 7, 8]),
        position=np.array([0, -1, 1, 2, -1, 1, 0, -1]),
        explore=np.array([40, 41, 42]),
    )
    # k=1: no list is short, so no fallback posts (which would need a serving context).
    shown = _shown_lists(None, None, lists, retrieval, chosen, k=1)
    assert shown.user.tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert shown.rank.tolist() == [1, 2, 3, 4, 1, 2, 3, 1]
    assert shown.item.tolist() == [10, 40, 11, 12, 41, 21, 20, 42]
    # u0: the slot above (5.0); u1: the best of its list (9.0); u2: alone, 0.0.
    assert shown.score.tolist() == [5.0, 5.0, 4.0, 3.0, 9.0, 9.0, 2.0, 0.0]
    assert shown.reason.tolist() == [0, 1, 0, 0, 1, 0, 0, 1]
    np.testing.assert_array_equal(shown.retrieval, [0.5, np.nan, 0.4, 0.3, np.nan, 0.1, 0.2, np.nan])
