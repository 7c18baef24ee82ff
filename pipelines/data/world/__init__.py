"""Synthetic world: a developer-news platform with users, posts and interaction logs.

The world is driven by hidden structure a good recommender can learn and a popularity baseline cannot:
every user has a sparse preference over topics, every post belongs to one topic (visible through its tags,
source, author and title words), posts have a hidden quality (popularity skew) and lose appeal as they age.
The platform's logged feed mixes fresh-popular posts with topic-matched ones; clicks follow preference,
quality, freshness and position; upvotes, bookmarks and shares follow clicks. A small share of raw rows is
deliberately malformed so the quality checks have something to catch. Writes the raw tables one ``ds``
partition per day, so the nightly job can be run for any date of the world. Deterministic for a seed.
"""

from pipelines.data.world.generator import World, WorldDay, WorldTruth
from pipelines.data.world.loading import load_world
from pipelines.data.world.profiles import SCALES, world_config
from pipelines.data.world.vocabulary import item_id, user_id

__all__ = ["SCALES", "World", "WorldDay", "WorldTruth", "item_id", "load_world", "user_id", "world_config"]
