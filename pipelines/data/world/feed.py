"""Interactions on the platform's logged feed: each day active users are shown posts (drawn by global
appeal, or matched to the user by topic or community), click some of them by preference, quality, age,
position and community as the regime's :class:`FeedProfile` weighs them, and upvote, bookmark or share
some of their clicks. Without sessions a post's age is taken at noon; with sessions each active user
visits at one time of the day and sees only posts created before that hour (ages exact)."""

from __future__ import annotations

import numpy as np

from pipelines.data.world.catalog import Catalog
from pipelines.data.world.communities import Communities
from pipelines.data.world.events import Interactions
from pipelines.data.world.regimes import FeedProfile
from pipelines.data.world.sampling import sample, sample_in_group, sample_rows
from pipelines.data.world.users import Users

FOLLOWUPS: tuple[tuple[str, float, int], ...] = (
    ("upvote", 0.30, 120),
    ("bookmark", 0.15, 180),
    ("share", 0.05, 240),
)


class Feed:
    """The day-by-day feed interactions of ``users`` with the posts of ``catalog``."""

    def __init__(
        self, catalog: Catalog, users: Users, profile: FeedProfile, communities: Communities | None = None
    ) -> None:
        self.catalog, self.users, self.config = catalog, users, users.config
        self.profile, self.communities = profile, communities

    def day(self, i: int, rng: np.random.Generator) -> Interactions | None:
        """The interactions of day ``i`` (None when nobody is active or nothing is live)."""
        cfg, posts, people, p = self.config, self.catalog, self.users, self.profile
        day_start_s = posts.day_start_s(i)
        live = posts.live(i)
        users = np.flatnonzero(people.signup_day <= i)
        p_active = np.clip(cfg.daily_active_fraction * people.activity[users] / people.activity.mean(), 0, 1)
        active = users[rng.random(len(users)) < p_active]
        if len(active) == 0 or len(live) == 0:
            return None
        ts = None
        if p.sessions:
            u, item, position, ts = self._sessions(i, active, live, rng)
        else:
            per_user = cfg.impressions_per_active_user_day
            u = np.repeat(active, per_user)
            position = np.tile(np.arange(per_user), len(active))
            age_days = np.maximum(0.0, (day_start_s + 43200 - posts.created_s[live]) / 86400.0)
            item = self._shown(u, live, posts.quality[live] * np.exp(-age_days / p.decay_days), rng)
        # Language: users see their language or English; and each post once.
        keep = (posts.language[item] == people.language[u]) | (posts.language[item] == 0)
        keep = keep.nonzero()[0]
        keep = keep[
            np.unique(u[keep].astype(np.int64) * (cfg.n_items + 1) + item[keep], return_index=True)[1]
        ]
        u, item, position = u[keep], item[keep], position[keep]
        ts = None if ts is None else ts[keep]
        seen_at = day_start_s + 43200 if ts is None else ts
        pref = people.pref[u, posts.topic[item]] * posts.n_topics
        item_age = np.maximum(0.0, (seen_at - posts.created_s[item]) / 86400.0)
        logit = (
            p.base
            + p.w_pref * np.log1p(pref)
            + p.w_quality * np.log(posts.quality[item])
            - p.w_age * item_age
            - p.w_position * position
            + rng.normal(0, p.noise, size=len(u))
        )
        if self.communities is not None:
            logit = logit + p.w_community * (self.communities.user[u] == self.communities.item[item])
        click = rng.random(len(u)) < 1 / (1 + np.exp(-logit))
        if ts is None:
            ts = day_start_s + rng.integers(0, 86400 - 900, size=len(u))
        kinds = [("impression", np.ones(len(u), bool), 0)]
        kinds.append(("click", click, 5))
        boost = np.clip(pref, 0.5, 2.0) if p.followups_by_pref else 1.0
        for name, share, lag in FOLLOWUPS:
            kinds.append((name, click & (rng.random(len(u)) < share * boost), lag))
        return Interactions(
            user=np.concatenate([u[mask] for _, mask, _ in kinds]),
            item=np.concatenate([item[mask] for _, mask, _ in kinds]),
            kind=np.concatenate([np.full(int(mask.sum()), name, dtype=object) for name, mask, _ in kinds]),
            ts=np.concatenate([ts[mask] + lag for _, mask, lag in kinds]),
            position=np.concatenate([position[mask] for _, mask, _ in kinds]),
        )

    def _shown(
        self, u: np.ndarray, live: np.ndarray, appeal: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The post shown in each impression slot of users ``u``: by global appeal or matched to the user."""
        posts, p = self.catalog, self.profile
        popular = live[sample(rng, appeal, len(u))]
        if p.match == "topic":
            matched = sample_in_group(
                rng, live, appeal, posts.topic[live], sample_rows(rng, self.users.pref[u])
            )
        else:
            groups = self.communities.item[live]
            matched = sample_in_group(rng, live, appeal, groups, self.communities.user[u])
        return np.where(rng.random(len(u)) < p.popular_share, popular, matched)

    def _sessions(
        self, i: int, active: np.ndarray, live: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Impressions when each active user visits once, in a random hour, and sees the ``live`` posts
        created before that hour.

        Returns:
            User, post, position and time (seconds since the post history's start) of each impression.
        """
        posts, per_user = self.catalog, self.config.impressions_per_active_user_day
        day_start_s = posts.day_start_s(i)
        hour = rng.integers(0, 24, size=len(active))
        visit = hour * 3600 + rng.integers(0, 2400, size=len(active))
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for h in np.unique(hour):
            pool = live[posts.created_s[live] < day_start_s + h * 3600]
            if len(pool) == 0:
                continue
            visitors = np.flatnonzero(hour == h)
            u = np.repeat(active[visitors], per_user)
            position = np.tile(np.arange(per_user), len(visitors))
            age_days = (day_start_s + h * 3600 + 1800 - posts.created_s[pool]) / 86400.0
            item = self._shown(
                u, pool, posts.quality[pool] * np.exp(-age_days / self.profile.decay_days), rng
            )
            seen = np.minimum(np.repeat(visit[visitors], per_user) + 10 * position, 86400 - 300)
            parts.append((u, item, position, day_start_s + seen))
        if not parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, empty
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))
