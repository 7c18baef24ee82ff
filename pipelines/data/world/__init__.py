"""Synthetic world: a developer-news platform with users, posts and interaction logs.

In the default regime the world is driven by hidden structure a good recommender can learn and a
popularity baseline cannot: every user has a sparse preference over topics, every post belongs to one
topic (visible through its tags, source, author and title words), posts have a hidden quality and lose
appeal as they age; the logged feed mixes fresh-popular and topic-matched posts, clicks follow preference,
quality, freshness and position, and upvotes, bookmarks and shares follow clicks. Other regimes let
popularity, latent communities, content of new posts, freshness or a ratings log dominate (``regimes``).
A small share of raw rows is deliberately malformed so the quality checks have something to catch.
Writes the raw tables one ``ds`` partition per day, so the nightly job can be run for any date of the
world. Deterministic for a seed.
"""

from pipelines.data.world.generator import World, WorldDay, WorldTruth
from pipelines.data.world.loading import load_world
from pipelines.data.world.profiles import SCALES, world_config
from pipelines.data.world.vocabulary import item_id, user_id

__all__ = ["SCALES", "World", "WorldDay", "WorldTruth", "item_id", "load_world", "user_id", "world_config"]
