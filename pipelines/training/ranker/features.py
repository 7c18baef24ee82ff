"""The ranker's features: (user, post) pairs and the feature matrix that describes them.

Training and serving compute features with the same function, :func:`ranker_features`, over the same
:class:`RankingPairs` structure, so the two can never drift apart. Features describe the pair at the moment
it was shown: the two-tower score and rank, the post's age, popularity and click-through, the
click-through of its source and author, how well its tags match the user's engaged and selected tags, and
the user's own activity. Reads Arrow tables of user and post rows; writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.tables import require_columns

# The model's inputs, in matrix column order. Changing this tuple makes every saved ranker unusable
# until it is retrained (scoring raises FeatureMismatchError), which is the point.
FEATURE_NAMES: tuple[str, ...] = (
    "retrieval_score",
    "retrieval_rank",
    "item_age_days",
    "impressions_short",
    "engagements_short",
    "engagements_lookback",
    "ctr_short",
    "source_ctr_lookback",
    "author_ctr_lookback",
    "tag_affinity",
    "selected_tag_overlap",
    "user_activity_lookback",
    "user_activity_short",
    "user_ctr_lookback",
    "user_account_age_days",
)

# Feature name -> column of the item rows (names as in ``item_features`` and ``ranking_examples``).
ITEM_NUMERIC_FEATURES: dict[str, str] = {
    "item_age_days": "item_age_days",
    "impressions_short": "impressions_short",
    "engagements_short": "engagements_short",
    "engagements_lookback": "engagements_lookback",
    "ctr_short": "ctr_short",
    "source_ctr_lookback": "source_ctr_lookback",
    "author_ctr_lookback": "author_ctr_lookback",
}
# Feature name -> column of the user rows (names as in ``user_features`` and ``ranking_examples``).
USER_NUMERIC_FEATURES: dict[str, str] = {
    "user_activity_lookback": "activity_lookback",
    "user_activity_short": "activity_short",
    "user_ctr_lookback": "ctr_lookback",
    "user_account_age_days": "account_age_days",
}
ITEM_COLUMNS: tuple[str, ...] = ("tags", *ITEM_NUMERIC_FEATURES.values())
USER_COLUMNS: tuple[str, ...] = (
    "selected_tags",
    "affinity_tags",
    "affinity_weights",
    *USER_NUMERIC_FEATURES.values(),
)
CANDIDATE_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "retrieval_score", "retrieval_rank")
_COLUMN = {name: j for j, name in enumerate(FEATURE_NAMES)}


def _span(names: tuple[str, ...]) -> slice:
    """The matrix columns of ``names``, which must be neighbours in ``FEATURE_NAMES`` in that order."""
    first = _COLUMN[names[0]]
    if [_COLUMN[name] for name in names] != list(range(first, first + len(names))):
        raise AssertionError(f"{names} must be consecutive in FEATURE_NAMES")
    return slice(first, first + len(names))


# Item and user numbers are gathered into the matrix as one block of columns each.
_ITEM_SPAN = _span(tuple(ITEM_NUMERIC_FEATURES))
_USER_SPAN = _span(tuple(USER_NUMERIC_FEATURES))


@dataclass(frozen=True)
class ItemFeatures:
    """The post side of the ranker's features for a table of post rows, computed once: a serving shard
    builds it for its whole catalog, and every batch of pairs only gathers rows of it.

    Attributes:
        numbers: ``(n_posts, >= len(ITEM_NUMERIC_FEATURES))`` float32, columns in ``ITEM_NUMERIC_FEATURES``
            order, then unused ones; NaN where a value is missing.
        tag_matrix: ``(n_posts, >= most tags of a post)`` int32: row ``j`` holds post ``j``'s tags in
            list order as positions in ``vocabulary``, then -1 up to the width; a null tag is -1 too.

    Rows are padded to 4, 8, 16 or 32 bytes where they fit: ``np.take`` gathers rows of those sizes
    about ten times faster than other sizes.
        vocabulary: the distinct tags of the posts.
    """

    numbers: np.ndarray
    tag_matrix: np.ndarray
    vocabulary: pa.Array

    @classmethod
    def from_rows(cls, items: pa.Table) -> ItemFeatures:
        """The features of every row of ``items`` (``item_features`` columns, at least ``ITEM_COLUMNS``).

        Raises:
            ValueError: a column is missing or not numeric.
        """
        require_columns(items, ITEM_COLUMNS, "item rows")
        numbers = np.full((items.num_rows, _padded_width(len(ITEM_NUMERIC_FEATURES))), np.nan, np.float32)
        for j, column in enumerate(ITEM_NUMERIC_FEATURES.values()):
            numbers[:, j] = numeric_column(items, column)
        tags = _flat_strings(items.column("tags"))
        vocabulary = pc.unique(tags.drop_null())
        lengths = _list_lengths(items.column("tags"))
        matrix = np.full((len(lengths), _padded_width(int(lengths.max(initial=0)))), -1, np.int32)
        owner = np.repeat(np.arange(len(lengths)), lengths)
        within = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        matrix[owner, within] = _codes(tags, vocabulary)
        return cls(numbers, matrix, vocabulary)

    def __len__(self) -> int:
        return len(self.numbers)


@dataclass(frozen=True)
class RankingPairs:
    """(user, post) pairs to rank, pointing into one table of user rows and the features of post rows.

    Keeping user and post rows apart means a user's lists (selected and affinity tags) and a post's
    features are stored once however many pairs they are in; every pair only carries two row numbers and
    its two-tower score and rank.

    Attributes:
        users: user rows with at least ``USER_COLUMNS`` (``user_features`` columns).
        items: the features of the post rows (:meth:`ItemFeatures.from_rows`).
        user_row: (n,) row of ``users`` for each pair.
        item_row: (n,) row of ``items`` for each pair.
        retrieval_score: (n,) two-tower score of each pair.
        retrieval_rank: (n,) 1-based rank of the post in the user's two-tower retrieval.
    """

    users: pa.Table
    items: ItemFeatures
    user_row: np.ndarray
    item_row: np.ndarray
    retrieval_score: np.ndarray
    retrieval_rank: np.ndarray

    def __post_init__(self) -> None:
        require_columns(self.users, USER_COLUMNS, "user rows")
        n = len(self.user_row)
        for name in ("item_row", "retrieval_score", "retrieval_rank"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"RankingPairs.{name} has {len(getattr(self, name))} entries, user_row has {n}"
                )
        for name, rows, limit in (
            ("user_row", self.user_row, self.users.num_rows),
            ("item_row", self.item_row, len(self.items)),
        ):
            bad = np.flatnonzero((rows < 0) | (rows >= limit))
            if len(bad):
                raise ValueError(f"pair {bad[0]}: {name} {rows[bad[0]]} is outside the {limit} rows given")

    def __len__(self) -> int:
        return len(self.user_row)

    @classmethod
    def from_examples(
        cls, rows: pa.Table, retrieval_score: np.ndarray, retrieval_rank: np.ndarray
    ) -> RankingPairs:
        """Pairs of training rows, which carry user and post columns side by side (one pair per row)."""
        index = np.arange(rows.num_rows, dtype=np.int64)
        return cls(
            users=rows.select(list(USER_COLUMNS)),
            items=ItemFeatures.from_rows(rows),
            user_row=index,
            item_row=index,
            retrieval_score=np.asarray(retrieval_score, dtype=np.float64),
            retrieval_rank=np.asarray(retrieval_rank, dtype=np.float64),
        )

    @classmethod
    def from_candidates(cls, candidates: pa.Table, users: pa.Table, items: pa.Table) -> RankingPairs:
        """Pairs of retrieved candidates at serving time.

        Args:
            candidates: ``user_id, item_id, retrieval_score, retrieval_rank``, one row per candidate.
            users: ``user_features`` rows of the shard's users (``user_id`` unique).
            items: ``item_features`` rows covering every candidate post (``item_id`` unique).

        Raises:
            ValueError: a column is missing, ids repeat in ``users``/``items``, or a candidate names a
                user or post that is not there (the message gives the first such candidate row).
        """
        require_columns(candidates, CANDIDATE_COLUMNS, "candidates")
        user_row = _pair_rows(candidates, users, "user_id", "user rows")
        item_row = _pair_rows(candidates, items, "item_id", "item rows")
        return cls(
            users=users,
            items=ItemFeatures.from_rows(items),
            user_row=user_row,
            item_row=item_row,
            retrieval_score=numeric_column(candidates, "retrieval_score"),
            retrieval_rank=numeric_column(candidates, "retrieval_rank"),
        )


def ranker_features(
    pairs: RankingPairs, retrieval_depth: int, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """The feature matrix of ``pairs``, columns in ``FEATURE_NAMES`` order; used by training and serving.

    ``retrieval_rank`` is capped at ``retrieval_depth + 1``: training ranks are ranks within the user's
    top-``retrieval_depth`` retrieval (``retrieval_depth + 1`` when the post was outside it), so deeper
    serving candidates look exactly like "outside the top". ``tag_affinity`` is the sum of the user's
    affinity weights over the post's tags, ``selected_tag_overlap`` the number of the post's tags the
    user selected at sign-up. Missing numbers stay NaN (LightGBM treats them as missing).

    Every value is a float32 whatever ``dtype``: a float64 matrix holds the same numbers, for a scorer
    that reads doubles (the compiled trees) without a copy of the whole matrix.

    Args:
        pairs: the pairs to describe.
        retrieval_depth: the depth the ranker was trained with.
        dtype: the matrix's type, ``np.float32`` or ``np.float64``.

    Returns:
        (len(pairs), len(FEATURE_NAMES)) matrix of ``dtype``.

    Raises:
        ValueError: a list column is malformed (the message names the row).
    """
    return PairFeatures(pairs, retrieval_depth).fill(0, np.empty((len(pairs), len(FEATURE_NAMES)), dtype))


# Rows filled at a time: a chunk's columns and temporaries stay in the CPU cache (1 MB of doubles).
_CHUNK_ROWS = 8192
# Above this many (user, tag) cells the overlaps use sorted keys instead of a dense table.
_DENSE_TAG_TABLE_CELLS = 1 << 24


class PairFeatures:
    """The rows of :func:`ranker_features`' matrix, block by block: the user side (numbers and tag
    tables) is prepared once, and a block of rows only gathers from it and from the post features,
    ``_CHUNK_ROWS`` rows at a time.

    Raises:
        ValueError: ``retrieval_depth`` is below 1, or a list column is malformed (the message names the
            row).
    """

    def __init__(self, pairs: RankingPairs, retrieval_depth: int) -> None:
        if retrieval_depth < 1:
            raise ValueError(f"retrieval_depth must be >= 1, got {retrieval_depth}")
        self.pairs, self.retrieval_depth = pairs, retrieval_depth
        self.user_numbers = np.empty((pairs.users.num_rows, len(USER_NUMERIC_FEATURES)), np.float32)
        for j, column in enumerate(USER_NUMERIC_FEATURES.values()):
            self.user_numbers[:, j] = numeric_column(pairs.users, column)
        self.tags = _UserTags.build(pairs.users, pairs.items.vocabulary)
        self.score = np.asarray(pairs.retrieval_score)
        self.rank = np.asarray(pairs.retrieval_rank)

    def fill(self, start: int, out: np.ndarray) -> np.ndarray:
        """Write the features of pairs ``start : start + len(out)`` into ``out`` and return it.

        Args:
            start: the first pair.
            out: ``(rows, len(FEATURE_NAMES))`` float32 or float64 matrix.

        Returns:
            ``out``.
        """
        items = self.pairs.items
        for at in range(0, len(out), _CHUNK_ROWS):
            chunk = out[at : at + _CHUNK_ROWS]
            rows = slice(start + at, start + at + len(chunk))
            user_row, item_row = self.pairs.user_row[rows], self.pairs.item_row[rows]
            chunk[:, _COLUMN["retrieval_score"]] = self.score[rows].astype(np.float32, copy=False)
            rank = np.minimum(self.rank[rows], self.retrieval_depth + 1)
            chunk[:, _COLUMN["retrieval_rank"]] = rank.astype(np.float32)
            chunk[:, _ITEM_SPAN] = np.take(items.numbers, item_row, axis=0)[:, : len(ITEM_NUMERIC_FEATURES)]
            chunk[:, _USER_SPAN] = np.take(self.user_numbers, user_row, axis=0)
            affinity, selected = self.tags.overlaps(user_row, np.take(items.tag_matrix, item_row, axis=0))
            chunk[:, _COLUMN["tag_affinity"]] = affinity.astype(np.float32)
            chunk[:, _COLUMN["selected_tag_overlap"]] = selected.astype(np.float32)
        return out


@dataclass(frozen=True)
class _UserTags:
    """The user side of the tag overlaps: per (user row, tag) the summed affinity weight and whether the
    user selected the tag, over a compact numbering of the tags the users list.

    A (user row, compact tag) pair is the key ``user_row * width + code``; tags no user lists, null tags
    and padding all map to code ``width - 1``, which no key uses, so they add 0.
    """

    compact: np.ndarray  # (len(vocabulary) + 1,): compact code of each vocabulary position, then of -1
    width: int
    keys: np.ndarray  # sorted unique keys of the listed (user, tag) pairs
    affinity: np.ndarray  # per key: the sum of the pair's affinity weights, in list order
    selected: np.ndarray  # per key: 1.0 when the user selected the tag (a tag listed twice counts once)
    dense: tuple[np.ndarray, np.ndarray] | None  # both as (n_users * width) tables, when small enough

    @classmethod
    def build(cls, users: pa.Table, vocabulary: pa.Array) -> _UserTags:
        """The tables of ``users``' affinity and selected tags, coded in the posts' ``vocabulary``.

        Raises:
            ValueError: a user's affinity tags and weights differ in length (the message names the row).
        """
        aff_len, aff_codes = _user_tags(users, "affinity_tags", vocabulary)
        sel_len, sel_codes = _user_tags(users, "selected_tags", vocabulary)
        aff_weights = _flat_numbers(users.column("affinity_weights"))
        weight_len = _list_lengths(users.column("affinity_weights"))
        bad = np.flatnonzero(weight_len != aff_len)
        if len(bad):
            row = bad[0]
            raise ValueError(
                f"user row {row}: {aff_len[row]} affinity_tags but {weight_len[row]} affinity_weights"
            )
        listed = np.unique(np.concatenate([aff_codes[aff_codes >= 0], sel_codes[sel_codes >= 0]]))
        width = len(listed) + 1
        compact = np.full(len(vocabulary) + 1, width - 1, np.int64)
        compact[listed] = np.arange(len(listed))
        n_users = users.num_rows

        def summed(lengths: np.ndarray, codes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
            owner = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
            keep = codes >= 0
            # bincount adds each key's weights in list order, as np.add.at on a table would.
            keys, inverse = np.unique(owner[keep] * width + compact[codes[keep]], return_inverse=True)
            return keys, np.bincount(inverse, weights=weights[keep], minlength=len(keys))

        aff_keys, aff_sums = summed(aff_len, aff_codes, np.nan_to_num(aff_weights))
        sel_keys, sel_counts = summed(sel_len, sel_codes, np.ones(len(sel_codes)))
        # Key -1 matches no pair: the sorted keys are never empty.
        keys = np.union1d(np.union1d(aff_keys, sel_keys), [-1])
        affinity, selected = np.zeros(len(keys)), np.zeros(len(keys))
        affinity[np.searchsorted(keys, aff_keys)] = aff_sums
        selected[np.searchsorted(keys, sel_keys)] = np.minimum(sel_counts, 1.0)
        dense = None
        if n_users * width <= _DENSE_TAG_TABLE_CELLS:
            # Few users (a serving batch): tables read by direct indexing.
            dense = np.zeros(n_users * width), np.zeros(n_users * width)
            dense[0][keys[1:]], dense[1][keys[1:]] = affinity[1:], selected[1:]
        return cls(compact, width, keys, affinity, selected, dense)

    def overlaps(self, user_row: np.ndarray, tag_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: the tag affinity and the selected-tag overlap of user ``user_row[i]`` with the post
        whose tags are row ``i`` of ``tag_matrix`` (:attr:`ItemFeatures.tag_matrix` rows), as float64."""
        # Position -1 (a null tag or padding) reads the last entry of ``compact``: code width - 1.
        query = np.asarray(user_row, np.int64)[:, None] * self.width + self.compact[tag_matrix]
        if self.dense is not None:
            found_affinity, found_selected = self.dense[0][query], self.dense[1][query]
        else:
            at = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
            hit = self.keys[at] == query
            found_affinity = np.where(hit, self.affinity[at], 0.0)
            found_selected = np.where(hit, self.selected[at], 0.0)
        # Summed tag after tag from 0, the order of the post's list.
        affinity, selected = np.zeros(len(query)), np.zeros(len(query))
        for j in range(query.shape[1]):
            affinity += found_affinity[:, j]
            selected += found_selected[:, j]
        return affinity, selected


def _padded_width(columns: int) -> int:
    """``columns`` of 4 bytes rounded up to a row of 4, 8, 16 or 32 bytes; wider rows stay as they are."""
    return next((width for width in (1, 2, 4, 8) if width >= columns), columns)


def _codes(values: pa.Array, vocabulary: pa.Array) -> np.ndarray:
    """The position of each value in ``vocabulary``, -1 for values (and nulls) not in it."""
    return pc.index_in(values, value_set=vocabulary).fill_null(-1).to_numpy().astype(np.int64)


def _user_tags(users: pa.Table, column: str, vocabulary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each user's number of tags in ``column`` and their codes in the posts' ``vocabulary`` (flat)."""
    return _list_lengths(users.column(column)), _codes(_flat_strings(users.column(column)), vocabulary)


def _list_lengths(column: pa.ChunkedArray) -> np.ndarray:
    return pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)


def _flat_strings(column: pa.ChunkedArray) -> pa.Array:
    flat = pc.list_flatten(column)
    flat = flat.combine_chunks() if isinstance(flat, pa.ChunkedArray) else flat
    return flat.cast(pa.string())


def _flat_numbers(column: pa.ChunkedArray) -> np.ndarray:
    flat = pc.list_flatten(column)
    return pc.cast(flat, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def numeric_column(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as float64 (decimals and ints included); nulls become NaN.

    Raises:
        ValueError: the column is not numeric.
    """
    values = table.column(column)
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)) and not (
        pa.types.is_decimal(values.type)
    ):
        raise ValueError(f"column {column!r} must be numeric, got {values.type}")
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _pair_rows(candidates: pa.Table, table: pa.Table, key: str, what: str) -> np.ndarray:
    require_columns(table, (key,), what)
    ids = table.column(key)
    if pc.count_distinct(ids).as_py() != table.num_rows or ids.null_count:
        raise ValueError(f"{what}: {key} must be unique and non-null")
    rows = pc.index_in(candidates.column(key), value_set=ids.combine_chunks())
    if rows.null_count:
        first = int(np.flatnonzero(rows.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"candidate row {first}: {key} {candidates.column(key)[first].as_py()!r} is not in the {what}"
        )
    return rows.to_numpy().astype(np.int64)
