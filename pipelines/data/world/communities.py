"""Latent communities of the ``collaborative`` regime: every user and every post belongs to one, drawn
from their own random stream, so nothing visible about a post (tags, source, author, title, language)
or a user's profile says which community it is in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Communities:
    """The community of each user and each post."""

    user: np.ndarray  # (n_users,)
    item: np.ndarray  # (n_items,)

    @classmethod
    def draw(cls, n_users: int, n_items: int, n_communities: int, rng: np.random.Generator) -> Communities:
        """Assign users and posts to ``n_communities`` communities, uniformly and independently.

        Returns:
            The communities of the users and of the posts.
        """
        return cls(rng.integers(0, n_communities, size=n_users), rng.integers(0, n_communities, size=n_items))
