"""A batch of users in the codes of the serving context: languages, blocked sources and tags, selected
tags and already-seen posts as integer arrays, sliced batch by batch."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.tables import row_numbers
from pipelines.serving.arrays import sorted_unique
from pipelines.serving.context import ServingContext


@dataclasses.dataclass(frozen=True)
class CodeLists:
    """One list of integer codes per user, stored flat: user ``u`` owns ``codes[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    codes: np.ndarray

    @classmethod
    def encode(cls, column: pa.ChunkedArray, vocabulary: dict[str, int]) -> CodeLists:
        """The codes of each list of ``column``; values (and nulls) not in ``vocabulary`` are left out."""
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
        codes = _vocabulary_codes(pc.list_flatten(column), vocabulary)
        owner = np.repeat(np.arange(len(lengths)), lengths)
        kept = codes >= 0
        counts = np.bincount(owner[kept], minlength=len(lengths))
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), codes[kept])

    def __getitem__(self, user: int) -> np.ndarray:
        return self.codes[self.indptr[user] : self.indptr[user + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def rows(self, start: int, stop: int) -> CodeLists:
        return CodeLists(
            self.indptr[start : stop + 1] - self.indptr[start],
            self.codes[self.indptr[start] : self.indptr[stop]],
        )

    def keys(self, width: int) -> np.ndarray:
        """Sorted unique ``user * width + code`` of every listed code."""
        return sorted_unique(np.repeat(np.arange(len(self.indptr) - 1), self.lengths) * width + self.codes)


@dataclasses.dataclass
class UserBatch:
    """Codes of one batch of users, aligned with the rows of ``users``."""

    users: pa.Table
    language: np.ndarray
    blocked_sources: CodeLists
    blocked_tags: CodeLists
    selected_tags: CodeLists
    seen_keys: np.ndarray  # user_row * n_items + item_row, sorted, unique
    n_items: int
    seen_users: pa.ChunkedArray  # the seen pairs, kept to re-key a slice when user ids repeat
    seen_items: np.ndarray  # post row of each seen pair, -1 when not in the catalog

    @classmethod
    def build(cls, users: pa.Table, seen: pa.Table, ctx: ServingContext) -> UserBatch:
        return cls.from_seen(users, seen.column("user_id"), ctx.item_rows(seen.column("item_id")), ctx)

    @classmethod
    def from_seen(
        cls, users: pa.Table, seen_users: pa.ChunkedArray, seen_items: np.ndarray, ctx: ServingContext
    ) -> UserBatch:
        n_items = len(ctx.item_ids)
        user_rows = row_numbers(seen_users, users.column("user_id"))
        known = (user_rows >= 0) & (seen_items >= 0)
        return cls(
            users=users,
            language=_vocabulary_codes(pc.fill_null(users.column("language"), ""), ctx.languages),
            blocked_sources=CodeLists.encode(users.column("blocked_sources"), ctx.sources),
            blocked_tags=CodeLists.encode(users.column("blocked_tags"), ctx.tags),
            selected_tags=CodeLists.encode(users.column("selected_tags"), ctx.tags),
            seen_keys=sorted_unique(user_rows[known] * n_items + seen_items[known]),
            n_items=n_items,
            seen_users=seen_users,
            seen_items=seen_items,
        )

    @functools.cached_property
    def unique_users(self) -> bool:
        ids = self.users.column("user_id")
        return pc.count_distinct(ids, mode="all").as_py() == len(ids)

    def rows(self, start: int, stop: int, ctx: ServingContext) -> UserBatch:
        """The batch of users ``start:stop``, as :meth:`build` would make it from those users alone."""
        users = self.users.slice(start, stop - start)
        if not self.unique_users:
            # A repeated id owns its seen posts at its last row within the slice: key them again.
            return UserBatch.from_seen(users, self.seen_users, self.seen_items, ctx)
        lo, hi = np.searchsorted(self.seen_keys, [start * self.n_items, stop * self.n_items])
        return UserBatch(
            users=users,
            language=self.language[start:stop],
            blocked_sources=self.blocked_sources.rows(start, stop),
            blocked_tags=self.blocked_tags.rows(start, stop),
            selected_tags=self.selected_tags.rows(start, stop),
            seen_keys=self.seen_keys[lo:hi] - start * self.n_items,
            n_items=self.n_items,
            seen_users=self.seen_users,
            seen_items=self.seen_items,
        )

    def has_seen(self, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Which pairs of user row ``rows[i]`` and post row ``positions[i, j]`` are seen pairs."""
        # Pairs whose post no user of the batch has seen stop at one lookup in a catalog-wide mask; only
        # the others are looked up one key at a time.
        seen = self._seen_posts[positions]
        maybe = np.flatnonzero(seen)
        if len(maybe):
            keys = rows[maybe // positions.shape[1]] * self.n_items + positions.reshape(-1)[maybe]
            seen.reshape(-1)[maybe] = self._seen_index.get_indexer(keys) >= 0
        return seen

    @functools.cached_property
    def _seen_posts(self) -> np.ndarray:
        posts = np.zeros(self.n_items, bool)
        posts[self.seen_keys % self.n_items] = True
        return posts

    @functools.cached_property
    def _seen_index(self) -> pd.Index:
        # A hash lookup: several times faster than a binary search over the sorted keys.
        return pd.Index(self.seen_keys)


def _vocabulary_codes(values: pa.Array | pa.ChunkedArray, vocabulary: dict[str, int]) -> np.ndarray:
    """The code of each value in ``vocabulary``, -1 for values (and nulls) not in it."""
    if not vocabulary:
        return np.full(len(values), -1, np.int64)
    found = pc.index_in(values, value_set=pa.array(list(vocabulary), pa.string()))
    codes = np.fromiter(vocabulary.values(), np.int64, len(vocabulary))
    return np.where(found.is_null(), -1, codes[found.fill_null(0).to_numpy()]).astype(np.int64)
