"""Exploration pools: the fresh, under-exposed posts open to each user language, and each user's pool
within a batch (what the filters let through), from which the exploration slot of a list is drawn."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pipelines.serving.arrays import concat_ranges, sorted_unique
from pipelines.serving.filters import ENGLISH

if TYPE_CHECKING:
    from pipelines.serving.batch import UserBatch
    from pipelines.serving.context import ServingContext


@dataclasses.dataclass(frozen=True)
class LanguagePool:
    """The exploration posts open to one user language (its own and English), each post once, in the
    order of its first listing in ``ServingContext.exploration``, with lookups into their positions:
    from catalog row (``sorted_posts`` / ``sorted_position``) and from source and tag code
    (``by_source[source_starts[c]:source_starts[c + 1]]`` are the positions of source ``c``'s posts)."""

    posts: np.ndarray
    sorted_posts: np.ndarray
    sorted_position: np.ndarray
    by_source: np.ndarray
    source_starts: np.ndarray
    by_tag: np.ndarray
    tag_starts: np.ndarray

    @classmethod
    def build(cls, ctx: ServingContext, language: int) -> LanguagePool:
        """The pool of ``language`` (a code of ``ctx.languages``) over ``ctx.exploration``."""
        _, first = np.unique(ctx.exploration, return_index=True)
        listed = ctx.exploration[np.sort(first)]
        codes = ctx.item_language[listed]
        posts = listed[(codes == language) | (codes == ctx.languages[ENGLISH])]
        order = np.argsort(posts)
        sources = ctx.item_source[posts]
        by_source = np.argsort(sources, kind="stable")
        lengths = ctx.tag_indptr[posts + 1] - ctx.tag_indptr[posts]
        position = np.repeat(np.arange(len(posts)), lengths)
        tags = ctx.tag_codes[concat_ranges(ctx.tag_indptr[posts], lengths)]
        by_tag = np.argsort(tags, kind="stable")
        return cls(
            posts=posts,
            sorted_posts=posts[order],
            sorted_position=order,
            by_source=by_source,
            source_starts=np.searchsorted(sources[by_source], np.arange(ctx.source_width + 1)),
            by_tag=position[by_tag],
            tag_starts=np.searchsorted(tags[by_tag], np.arange(ctx.tag_width + 1)),
        )

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(which, position)``: the indices in ``rows`` of pool posts and their positions in ``posts``."""
        if len(self.posts) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self.sorted_posts, rows), len(self.posts) - 1)
        which = np.flatnonzero(self.sorted_posts[at] == rows)
        return which, self.sorted_position[at[which]]


class ExplorationPools:
    """Each user's exploration pool: the exploration posts :func:`pipelines.serving.filters.allowed` lets
    through.

    A pool is its language's exploration posts minus the few the user has seen or blocked, so pools are
    counted and indexed through those few positions, for the whole batch at once, never listed.
    """

    def __init__(self, ctx: ServingContext, batch: UserBatch) -> None:
        self.ctx, self.batch = ctx, batch

    def pick(
        self, exclude_indptr: np.ndarray, exclude: np.ndarray, draw: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """One exploration post per user of the batch, -1 for none, as
        :meth:`pipelines.serving.diversify.ExplorationPool.pick` describes."""
        ctx, batch = self.ctx, self.batch
        n_users = batch.users.num_rows
        seen_owner, seen_post = np.divmod(batch.seen_keys, len(ctx.item_ids))
        listed = (
            (seen_owner, seen_post),
            (np.repeat(np.arange(n_users), np.diff(exclude_indptr)), exclude),
        )
        coded = (
            (batch.blocked_sources, "by_source", "source_starts"),
            (batch.blocked_tags, "by_tag", "tag_starts"),
        )
        pools = {int(language): ctx.exploration_for(int(language)) for language in np.unique(batch.language)}
        sizes = np.zeros(n_users, np.int64)
        owners, positions = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for language, pool in pools.items():
            members = batch.language == language
            sizes[members] = len(pool.posts)
            for owner, rows in listed:
                chosen = np.flatnonzero(members[owner])
                which, position = pool.positions(rows[chosen])
                owners.append(owner[chosen[which]])
                positions.append(position)
            for lists, index, starts in coded:
                owner = np.repeat(np.arange(n_users), lists.lengths)
                chosen = np.flatnonzero(members[owner])
                codes = lists.codes[chosen]
                lo, hi = getattr(pool, starts)[codes], getattr(pool, starts)[codes + 1]
                owners.append(np.repeat(owner[chosen], hi - lo))
                positions.append(getattr(pool, index)[concat_ranges(lo, hi - lo)])
        # Every (user, position) out of a user's pool, as sorted unique keys.
        stride = int(sizes.max(initial=0)) + 1
        gone = sorted_unique(np.concatenate(owners) * stride + np.concatenate(positions))
        gone_owner, gone_position = np.divmod(gone, stride)
        counts = sizes - np.bincount(gone_owner, minlength=n_users)
        nth = draw(counts)
        picking = np.flatnonzero(counts > 0)
        # The nth open position of a user skips every gone position at or before it: with gone positions
        # g_0 < g_1 < ... of the user, that is nth + #{i : g_i - i <= nth}.
        gone_start = np.searchsorted(gone_owner, np.arange(n_users + 1))
        skipped = gone_owner * stride + gone_position - (np.arange(len(gone)) - gone_start[gone_owner])
        position = nth + np.searchsorted(skipped, picking * stride + nth, side="right") - gone_start[picking]
        picks = np.full(n_users, -1, np.int64)
        for language, pool in pools.items():
            mine = batch.language[picking] == language
            picks[picking[mine]] = pool.posts[position[mine]]
        return picks
