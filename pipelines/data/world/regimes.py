"""The regimes of the synthetic world: profiles of the generator in which different signals drive
engagement (``WorldConfig.regime``), each combinable with the sizes of any scale.

- default: topic match (visible in tags) plus quality and freshness; the logged feed is half popular,
  half topic-matched; ages are taken at noon.
- popularity: very heavy-tailed quality (sigma 2.2); 85% of the feed is drawn by global appeal (decaying
  over 3 days) and clicks follow quality, barely preference: a few recent hits take most engagement.
- collaborative: 12 latent communities of users and posts, drawn apart from every visible field; 40% of
  the feed comes from the user's community and clicks follow membership (+3 logit), not topic.
- content: 8 times the posts, nearly all created in the window and shown for a day or two; clicks follow
  topic match strongly, so most engagement lands on posts nobody engaged with on an earlier day.
- freshness: 3 times the posts, nearly all new; appeal decays over 0.8 days and each day of age costs
  1 logit of clicking (ages exact: users visit at one time of day); topic and quality matter little.
- ratings: no feed; a MovieLens-like log over 200 days: long-lived posts released over time, heavy-tailed
  popularity plus latent taste, long user histories, quiet days (see ``ratings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FeedProfile:
    """How the logged feed is drawn and how users respond to it (weights of the click logit)."""

    popular_share: float = 0.5  # share of impressions drawn by global appeal; the rest are matched
    match: Literal["topic", "community"] = "topic"  # what the matched impressions share with the user
    decay_days: float = 4.0  # e-folding age of a post's appeal in the feed
    sessions: bool = False  # users visit at one time of day and see only older posts (exact ages)
    base: float = -3.6
    w_pref: float = 1.5  # on log1p(topic preference x n_topics)
    w_quality: float = 0.35  # on log(quality)
    w_age: float = 0.12  # per day of age
    w_position: float = 0.04  # per feed slot
    w_community: float = 0.0  # when the post is of the user's community
    noise: float = 0.4
    followups_by_pref: bool = True  # upvotes, bookmarks and shares more likely on preferred topics


@dataclass(frozen=True)
class Regime:
    """A profile of the generator: the catalog's shape, the feed (None: a ratings log) and sizes."""

    history_days: int = 30  # days of posts created before the window
    quality_sigma: float = 0.8  # sigma of the log-normal post quality (popularity skew)
    existing_users: float = 0.85  # share of users signed up before the window
    items_factor: float = 1.0  # n_items is multiplied by this (unless set by the user)
    n_days: int | None = None  # the window's length (unless set by the user); None: the scale's
    n_communities: int = 0  # latent communities of users and posts (0: none)
    feed: FeedProfile | None = FeedProfile()


REGIMES: dict[str, Regime] = {
    "default": Regime(),
    "popularity": Regime(
        quality_sigma=2.2,
        feed=FeedProfile(
            popular_share=0.85, decay_days=3.0, w_pref=0.15, w_quality=0.8, followups_by_pref=False
        ),
    ),
    "collaborative": Regime(
        quality_sigma=0.5,
        n_communities=12,
        feed=FeedProfile(
            popular_share=0.6,
            match="community",
            decay_days=10.0,
            w_pref=0.0,
            w_quality=0.2,
            w_age=0.03,
            w_community=3.0,
            followups_by_pref=False,
        ),
    ),
    "content": Regime(
        history_days=2,
        quality_sigma=0.3,
        items_factor=8.0,
        feed=FeedProfile(
            popular_share=0.1, decay_days=1.5, sessions=True, base=-5.0, w_pref=2.5, w_quality=0.2, w_age=0.3
        ),
    ),
    "freshness": Regime(
        history_days=2,
        quality_sigma=0.3,
        items_factor=3.0,
        feed=FeedProfile(
            popular_share=0.8,
            decay_days=0.8,
            sessions=True,
            base=-2.2,
            w_pref=0.15,
            w_quality=0.2,
            w_age=1.0,
            followups_by_pref=False,
        ),
    ),
    "ratings": Regime(history_days=200, quality_sigma=1.5, existing_users=0.4, n_days=200, feed=None),
}
