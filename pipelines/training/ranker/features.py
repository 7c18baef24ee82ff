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


@dataclass(frozen=True)
class ItemFeatures:
    """The post side of the ranker's features for a table of post rows, computed once: a serving shard
    builds it for its whole catalog, and every batch of pairs only gathers rows of it.

    Attributes:
        numbers: ``(n_posts, len(ITEM_NUMERIC_FEATURES))`` float32, columns in ``ITEM_NUMERIC_FEATURES``
            order; NaN where a value is missing.
        tag_indptr: ``(n_posts + 1,)``: post ``j``'s tags are ``tag_codes[tag_indptr[j]:tag_indptr[j + 1]]``.
        tag_codes: positions in ``vocabulary``; -1 for a null tag.
        vocabulary: the distinct tags of the posts.
    """

    numbers: np.ndarray
    tag_indptr: np.ndarray
    tag_codes: np.ndarray
    vocabulary: pa.Array

    @classmethod
    def from_rows(cls, items: pa.Table) -> ItemFeatures:
        """The features of every row of ``items`` (``item_features`` columns, at least ``ITEM_COLUMNS``).

        Raises:
            ValueError: a column is missing or not numeric.
        """
        require_columns(items, ITEM_COLUMNS, "item rows")
        numbers = np.empty((items.num_rows, len(ITEM_NUMERIC_FEATURES)), np.float32)
        for j, column in enumerate(ITEM_NUMERIC_FEATURES.values()):
            numbers[:, j] = numeric_column(items, column)
        tags = _flat_strings(items.column("tags"))
        vocabulary = pc.unique(tags.drop_null())
        lengths = _list_lengths(items.column("tags"))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(numbers, indptr, _codes(tags, vocabulary), vocabulary)

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
    if retrieval_depth < 1:
        raise ValueError(f"retrieval_depth must be >= 1, got {retrieval_depth}")
    matrix = np.empty((len(pairs), len(FEATURE_NAMES)), dtype=dtype)

    def put(name: str, values: np.ndarray) -> None:
        matrix[:, _COLUMN[name]] = np.asarray(values).astype(np.float32, copy=False)

    put("retrieval_score", pairs.retrieval_score)
    put("retrieval_rank", np.minimum(pairs.retrieval_rank, retrieval_depth + 1))
    matrix[:, [_COLUMN[name] for name in ITEM_NUMERIC_FEATURES]] = pairs.items.numbers[pairs.item_row]
    user_numbers = np.empty((pairs.users.num_rows, len(USER_NUMERIC_FEATURES)), np.float32)
    for j, column in enumerate(USER_NUMERIC_FEATURES.values()):
        user_numbers[:, j] = numeric_column(pairs.users, column)
    matrix[:, [_COLUMN[name] for name in USER_NUMERIC_FEATURES]] = user_numbers[pairs.user_row]
    affinity, selected = _tag_overlaps(pairs)
    put("tag_affinity", affinity)
    put("selected_tag_overlap", selected)
    return matrix


# Above this many (user, tag) cells the overlaps use sorted keys instead of a dense table.
_DENSE_TAG_TABLE_CELLS = 1 << 24


def _tag_overlaps(pairs: RankingPairs) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: sum of the user's affinity weights over the post's tags, and count of selected tags.

    User tags get the codes of the posts' tag vocabulary (a tag no post has cannot overlap); a (user
    row, tag code) pair becomes one int64 key, so both overlaps are a lookup of every (pair, post tag)
    against the user side.
    """
    items, users = pairs.items, pairs.users
    aff_len, aff_codes = _user_tags(users, "affinity_tags", items)
    sel_len, sel_codes = _user_tags(users, "selected_tags", items)
    aff_weights = _flat_numbers(users.column("affinity_weights"))
    weight_len = _list_lengths(users.column("affinity_weights"))
    bad = np.flatnonzero(weight_len != aff_len)
    if len(bad):
        raise ValueError(
            f"user row {bad[0]}: {aff_len[bad[0]]} affinity_tags but {weight_len[bad[0]]} affinity_weights"
        )
    vocab = max(len(items.vocabulary), 1)

    # Expand every pair into one entry per tag of its post.
    item_len = np.diff(items.tag_indptr)
    per_pair = item_len[pairs.item_row]
    pair_of_entry = np.repeat(np.arange(len(pairs), dtype=np.int64), per_pair)
    entry_start = np.cumsum(per_pair) - per_pair
    within = np.arange(len(pair_of_entry), dtype=np.int64) - np.repeat(entry_start, per_pair)
    entry_code = items.tag_codes[np.repeat(items.tag_indptr[pairs.item_row], per_pair) + within]
    valid = entry_code >= 0
    query = pairs.user_row[pair_of_entry].astype(np.int64) * vocab + entry_code

    def lookup(lengths: np.ndarray, codes: np.ndarray, weights: np.ndarray, once: bool) -> np.ndarray:
        owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        keep = codes >= 0
        if len(lengths) * vocab <= _DENSE_TAG_TABLE_CELLS:
            # Few users (a serving batch): a dense (user, tag) table, read by direct indexing.
            table = np.zeros(len(lengths) * vocab)
            np.add.at(table, owner[keep] * vocab + codes[keep], weights[keep])
            if once:
                table = np.minimum(table, 1.0)
            found = np.where(valid, table[np.where(valid, query, 0)], 0.0)
            return np.bincount(pair_of_entry, weights=found, minlength=len(pairs))
        keys, inverse = np.unique(owner[keep] * vocab + codes[keep], return_inverse=True)
        summed = np.bincount(inverse, weights=weights[keep], minlength=len(keys))
        if once:
            summed = np.minimum(summed, 1.0)
        if len(keys) == 0:
            return np.zeros(len(pairs))
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        hit = valid & (keys[pos] == query)
        return np.bincount(pair_of_entry, weights=np.where(hit, summed[pos], 0.0), minlength=len(pairs))

    affinity = lookup(aff_len, aff_codes, np.nan_to_num(aff_weights), once=False)
    # A tag listed twice among the selected tags still counts once.
    selected = lookup(sel_len, sel_codes, np.ones(len(sel_codes)), once=True)
    return affinity, selected


def _codes(values: pa.Array, vocabulary: pa.Array) -> np.ndarray:
    """The position of each value in ``vocabulary``, -1 for values (and nulls) not in it."""
    return pc.index_in(values, value_set=vocabulary).fill_null(-1).to_numpy().astype(np.int64)


def _user_tags(users: pa.Table, column: str, items: ItemFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Each user's number of tags in ``column`` and their codes in the posts' vocabulary (flat)."""
    return _list_lengths(users.column(column)), _codes(_flat_strings(users.column(column)), items.vocabulary)


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
