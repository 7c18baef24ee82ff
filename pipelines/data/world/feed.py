"""Interactions on the platform's logged feed: each day active users are shown posts (fresh-popular and
topic-matched ones), click some of them by preference, quality, freshness and position, and upvote,
bookmark or share some of their clicks."""

from __future__ import annotations

import numpy as np

from pipelines.data.world.catalog import Catalog
from pipelines.data.world.events import Interactions
from pipelines.data.world.sampling import sample, sample_in_group, sample_rows
from pipelines.data.world.users import Users


class Feed:
    """The day-by-day feed interactions of ``users`` with the posts of ``catalog``."""

    def __init__(self, catalog: Catalog, users: Users) -> None:
        self.catalog, self.users, self.config = catalog, users, users.config

    def day(self, i: int, rng: np.random.Generator) -> Interactions | None:
        """The interactions of day ``i`` (None when nobody is active or nothing is live)."""
        cfg, posts, people = self.config, self.catalog, self.users
        day_start_s = posts.day_start_s(i)
        live = posts.live(i)
        users = np.flatnonzero(people.signup_day <= i)
        p_active = np.clip(cfg.daily_active_fraction * people.activity[users] / people.activity.mean(), 0, 1)
        active = users[rng.random(len(users)) < p_active]
        if len(active) == 0 or len(live) == 0:
            return None
        per_user = cfg.impressions_per_active_user_day
        u = np.repeat(active, per_user)
        position = np.tile(np.arange(per_user), len(active))
        age_days = np.maximum(0.0, (day_start_s + 43200 - posts.created_s[live]) / 86400.0)
        appeal = posts.quality[live] * np.exp(-age_days / 4.0)
        # The logged feed: half fresh-popular, half topic-matched by the user's preference.
        popular = live[sample(rng, appeal, len(u))]
        topic = sample_rows(rng, people.pref[u])
        matched = sample_in_group(rng, live, appeal, posts.topic[live], topic)
        item = np.where(rng.random(len(u)) < 0.5, popular, matched)
        # Language: users see their language or English.
        ok_lang = (posts.language[item] == people.language[u]) | (posts.language[item] == 0)
        u, item, position = u[ok_lang], item[ok_lang], position[ok_lang]
        uniq = np.unique(u.astype(np.int64) * (cfg.n_items + 1) + item, return_index=True)[1]
        u, item, position = u[uniq], item[uniq], position[uniq]
        pref = people.pref[u, posts.topic[item]] * posts.n_topics
        item_age = np.maximum(0.0, (day_start_s + 43200 - posts.created_s[item]) / 86400.0)
        logit = (
            -3.6
            + 1.5 * np.log1p(pref)
            + 0.35 * np.log(posts.quality[item])
            - 0.12 * item_age
            - 0.04 * position
            + rng.normal(0, 0.4, size=len(u))
        )
        click = rng.random(len(u)) < 1 / (1 + np.exp(-logit))
        ts = day_start_s + rng.integers(0, 86400 - 900, size=len(u))
        kinds = [("impression", np.ones(len(u), bool), 0)]
        kinds.append(("click", click, 5))
        for name, p, lag in (("upvote", 0.30, 120), ("bookmark", 0.15, 180), ("share", 0.05, 240)):
            kinds.append((name, click & (rng.random(len(u)) < p * np.clip(pref, 0.5, 2.0)), lag))
        return Interactions(
            user=np.concatenate([u[mask] for _, mask, _ in kinds]),
            item=np.concatenate([item[mask] for _, mask, _ in kinds]),
            kind=np.concatenate([np.full(int(mask.sum()), name, dtype=object) for name, mask, _ in kinds]),
            ts=np.concatenate([ts[mask] + lag for _, mask, lag in kinds]),
            position=np.concatenate([position[mask] for _, mask, _ in kinds]),
        )
