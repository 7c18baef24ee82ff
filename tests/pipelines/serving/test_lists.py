"""The published candidate lists of the tiny world: invariants, cold start, posts found through their
content."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.pipelines.serving.nightly_world import TOP_K, frames

pytestmark = pytest.mark.slow


def test_every_published_list_obeys_the_invariants(world: dict[str, Any]) -> None:
    """Checked here from the inputs, independently of the pipeline's own check."""
    candidates, users, items, seen = frames(world["lake"])
    assert set(candidates.user_id) == set(users.user_id), "every user gets a list"
    sizes = candidates.groupby("user_id").size()
    assert (sizes == TOP_K).all(), "the catalog is large enough for a full list for everyone"
    assert not candidates.duplicated(["user_id", "item_id"]).any()
    assert set(candidates.item_id) <= set(items.item_id)
    shown = candidates.merge(seen, on=["user_id", "item_id"])
    assert shown.empty, f"seen posts recommended: {shown.head(3).to_dict('records')}"
    joined = candidates.merge(users, on="user_id").merge(items, on="item_id", suffixes=("_user", ""))
    blocked_tag = joined.apply(lambda r: bool(set(r.tags) & set(r.blocked_tags)), axis=1)
    blocked_source = joined.apply(lambda r: r.source in set(r.blocked_sources), axis=1)
    assert not blocked_tag.any() and not blocked_source.any()
    assert ((joined.language == joined.language_user) | (joined.language == "en")).all()
    for _, group in candidates.groupby("user_id"):
        assert list(group["rank"]) == list(range(1, len(group) + 1))
        assert (np.diff(group["score"].to_numpy()) <= 0).all(), "scores never increase down a list"
    assert set(candidates.reason) <= {"ranked", "explore", "fallback"}
    assert (candidates.reason == "explore").sum() >= 1


def test_blocked_users_exist_in_the_fixture(world: dict[str, Any]) -> None:
    """Guards the invariant test above against passing vacuously."""
    _, users, _, seen = frames(world["lake"])
    assert (users.blocked_tags.map(len) > 0).sum() > 0
    assert (users.blocked_sources.map(len) > 0).sum() > 0
    assert len(seen) > 0


def test_cold_start_users_get_a_full_list(world: dict[str, Any]) -> None:
    candidates, users, _, _ = frames(world["lake"])
    cold = users[users.history.map(len) == 0].user_id
    assert len(cold) > 0, "the tiny world has users who signed up without history"
    sizes = candidates[candidates.user_id.isin(cold)].groupby("user_id").size()
    assert len(sizes) == len(cold) and (sizes == TOP_K).all()


def test_posts_without_any_interaction_are_retrieved_through_their_content(world: dict[str, Any]) -> None:
    candidates, _, items, _ = frames(world["lake"])
    untouched = items[(items.impressions_short == 0) & (items.engagements_lookback == 0)].item_id
    assert len(untouched) > 0, "the tiny world has posts nobody has seen yet"
    retrieved = candidates[candidates.item_id.isin(untouched) & (candidates.reason == "ranked")]
    assert retrieved.item_id.nunique() > 0
    assert np.isfinite(retrieved.retrieval_score).all()
