"""The ``ratings`` regime's log: a MovieLens-like record of ratings with no feed and no impressions.

Each user rates a heavy-tailed number of posts (about 50 on average) in a few sessions spread over the
days from their signup to the end of the window; about a fifth of the days are quiet (no ratings at
all). Posts are released over time and never lose appeal: a rating picks among the posts released by
then, first by popularity (the heavy-tailed quality), then by latent taste (a topic part plus 8 hidden
factors) among 12 such candidates, in the user's language or English, each post at most once per user.
Stars follow popularity and taste with MovieLens' shares (6/11/27/34/22% for 1..5); every rating is
logged as a ``click`` and a rating of 4 or 5 also as an ``upvote``. Positions are unknown (null).
"""

from __future__ import annotations

import numpy as np

from pipelines.data.world.catalog import Catalog
from pipelines.data.world.events import Interactions
from pipelines.data.world.users import Users

LATENT_FACTORS = 8
CANDIDATES = 12
TASTE_WEIGHT = 1.0  # on taste, when choosing among the candidates
QUIET_DAY_SHARE = 0.2
RATING_GAP_S = 30  # seconds between two ratings of one session
STAR_SHARES = (0.06, 0.11, 0.27, 0.34, 0.22)  # of 1..5 stars, as in MovieLens 100k


class RatingsLog:
    """Every rating of ``users`` on the posts of ``catalog``, drawn once, served day by day."""

    def __init__(self, catalog: Catalog, users: Users, rng: np.random.Generator) -> None:
        self.catalog, self.users = catalog, users
        self.user_factors, self.item_factors = self._draw_taste(rng)
        user, ts = self._rating_times(rng)
        item = self._pick_items(user, ts, rng)
        keep = item >= 0
        user, ts, item = user[keep], ts[keep], item[keep]
        first = np.unique(user.astype(np.int64) * (catalog.config.n_items + 1) + item, return_index=True)[1]
        first = np.sort(first)  # each post at most once per user: the first rating
        user, ts, item = user[first], ts[first], item[first]
        day = (ts - catalog.day_start_s(0)) // 86400
        alive = (catalog.deleted_day[item] < 0) | (catalog.deleted_day[item] >= day)
        user, ts, item, day = user[alive], ts[alive], item[alive], day[alive]
        order = np.argsort(day, kind="stable")
        self._user, self._ts, self._item = user[order], ts[order], item[order]
        self._stars = self._draw_stars(self._user, self._item, rng)
        self._day_bounds = np.searchsorted(day[order], np.arange(catalog.config.n_days + 1))

    def taste(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The hidden taste of each ``user`` for the matching ``item`` (about standard normal)."""
        return np.einsum("ij,ij->i", self.user_factors[user], self.item_factors[item])

    def day(self, i: int, rng: np.random.Generator) -> Interactions | None:
        """The ratings of day ``i``: a click each, and an upvote for 4 or 5 stars (None on quiet days).

        ``rng`` is not needed: the log is drawn once.
        """
        rows = slice(self._day_bounds[i], self._day_bounds[i + 1])
        user, item, ts, stars = self._user[rows], self._item[rows], self._ts[rows], self._stars[rows]
        if len(user) == 0:
            return None
        high = stars >= 4
        n_click, n_up = len(user), int(high.sum())
        return Interactions(
            user=np.concatenate([user, user[high]]),
            item=np.concatenate([item, item[high]]),
            kind=np.array(["click"] * n_click + ["upvote"] * n_up, dtype=object),
            ts=np.concatenate([ts, ts[high] + 1]),
            position=None,
        )

    def _draw_taste(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Factors whose row-wise dot product is the taste: a topic part (the user's preference for the
        post's topic, standardised) and latent factors unrelated to anything visible."""
        n_topics = self.catalog.n_topics
        log_pref = np.log(self.users.pref * n_topics + 0.1)
        topic_part = (log_pref - log_pref.mean()) / log_pref.std()
        user_latent = rng.normal(size=(len(log_pref), LATENT_FACTORS))
        item_latent = rng.normal(size=(len(self.catalog.topic), LATENT_FACTORS)) / np.sqrt(LATENT_FACTORS)
        user_factors = np.hstack([0.5 * topic_part, 0.85 * user_latent])
        item_factors = np.hstack([np.eye(n_topics)[self.catalog.topic], item_latent])
        return user_factors, item_factors

    def _rating_times(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The user and time (seconds since the post history's start) of every rating, by user and time."""
        cfg, people = self.catalog.config, self.users
        n_users, n_days = cfg.n_users, cfg.n_days
        weight = rng.lognormal(0.0, 0.4, size=n_days) * (rng.random(n_days) >= QUIET_DAY_SHARE)
        if weight.sum() == 0:
            weight[-1] = 1.0
        cum = np.concatenate([[0.0], np.cumsum(weight)])
        n_ratings = np.minimum(
            15 + rng.lognormal(np.log(30), 1.0, size=n_users).astype(np.int64), cfg.n_items // 2
        )
        n_sessions = np.minimum(1 + rng.poisson(n_ratings / 12), n_ratings)
        # Sessions fall on the days from signup to the end, in proportion to the days' weights.
        session_user = np.repeat(np.arange(n_users), n_sessions)
        low, high = cum[np.maximum(people.signup_day[session_user], 0)], cum[n_days]
        draw = low + rng.random(len(session_user)) * (high - low)
        session_day = np.minimum(np.searchsorted(cum, draw, side="right") - 1, n_days - 1)
        # Each rating goes to one of its user's sessions; a session's ratings follow each other.
        user = np.repeat(np.arange(n_users), n_ratings)
        first_session = np.concatenate([[0], np.cumsum(n_sessions)[:-1]])
        session = first_session[user] + (rng.random(len(user)) * n_sessions[user]).astype(np.int64)
        order = np.lexsort((rng.random(len(user)), session))
        user, session = user[order], session[order]
        rank = np.arange(len(session)) - np.searchsorted(session, session, side="left")
        length = np.bincount(session, minlength=len(session_user))
        on_signup = session_day == people.signup_day[session_user]
        earliest = np.where(on_signup, people.signup_s[session_user], 0)
        latest = np.maximum(86400 - 60 - RATING_GAP_S * length, earliest)
        start = earliest + (rng.random(len(session_user)) * (latest - earliest)).astype(np.int64)
        in_day = np.minimum(start[session] + RATING_GAP_S * rank, 86400 - 2)
        ts = self.catalog.day_start_s(0) + session_day[session] * 86400 + in_day
        usable = (high > low)[session]  # not when every day from signup on is quiet
        user, ts = user[usable], ts[usable]
        order = np.lexsort((ts, user))
        return user[order], ts[order]

    def _pick_items(self, user: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The post of each rating (-1 when none fits): released by ``ts``, drawn by popularity, then
        chosen by taste among ``CANDIDATES`` draws, in the user's language or English."""
        posts, people = self.catalog, self.users
        released = np.searchsorted(posts.created_s, ts, side="right")  # posts are numbered by creation
        cdf = np.cumsum(posts.quality)
        out = np.full(len(user), -1, dtype=np.int64)
        for rows in np.array_split(np.arange(len(user)), max(1, len(user) // 16384)):
            rows = rows[released[rows] > 0]
            last = released[rows] - 1
            draws = rng.random((len(rows), CANDIDATES)) * cdf[last][:, None]
            cand = np.minimum(np.searchsorted(cdf, draws, side="right"), last[:, None])
            u = np.repeat(user[rows], CANDIDATES)
            taste = self.taste(u, cand.ravel()).reshape(cand.shape)
            lang = posts.language[cand]
            fits = (lang == people.language[user[rows]][:, None]) | (lang == 0)
            gumbel = -np.log(-np.log(rng.random(cand.shape)))
            score = np.where(fits, TASTE_WEIGHT * taste + gumbel, -np.inf)
            best = np.argmax(score, axis=1)
            chosen = cand[np.arange(len(rows)), best]
            out[rows] = np.where(fits[np.arange(len(rows)), best], chosen, -1)
        return out

    def _draw_stars(self, user: np.ndarray, item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """1..5 stars from popularity, taste and noise, cut at MovieLens' shares."""
        quality = np.log(self.catalog.quality[item])
        score = (
            0.5 * quality / max(quality.std(), 1e-9) + self.taste(user, item) + rng.normal(0, 0.7, len(user))
        )
        if len(score) == 0:
            return np.zeros(0, np.int64)
        cuts = np.quantile(score, np.cumsum(STAR_SHARES)[:-1])
        return 1 + np.searchsorted(cuts, score, side="right")
