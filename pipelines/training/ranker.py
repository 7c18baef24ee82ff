"""Ranker stage: a LightGBM lambdarank model that re-orders each user's retrieved candidates.

The ranker learns from logged impressions: every (user, post) pair the feed showed, graded by what the
user did next (0 shown only, 1 click, 2 upvote, 3 bookmark, 4 share). A query group is one user's
impressions of one day. Its features describe the pair at the moment it was shown: the two-tower score
and rank, the post's age, popularity and click-through, the click-through of its source and author, how
well its tags match the user's engaged and selected tags, and the user's own activity.

Training and serving compute features with the same function, :func:`ranker_features`, over the same
:class:`RankingPairs` structure, so the two can never drift apart; the saved model stores the ordered
feature names and refuses a matrix built with any other list (:class:`FeatureMismatchError`).

Reads: rows of ``sql/training/ranking_dataset.sql`` (``split`` says train or eval) plus the two-tower
score and rank of each row's pair for training; at serving, ``user_features`` rows, ``item_features``
rows and the retrieved candidates of one user shard.
Writes: ``models/ranker/<version>/`` in the lake (``model.txt``, ``feature_names.json``, ``metrics.json``,
then ``config.json`` last). Promotion to champion is :mod:`pipelines.training.registry`'s, on ``ndcg_at_10``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, LakePaths
from pipelines.core.settings import RankerConfig
from pipelines.core.tables import require_columns
from pipelines.training.metrics import average_precision, graded_ndcg_at_k
from pipelines.training.registry import check_version

log = logging.getLogger(__name__)

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
EXAMPLE_KEY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ds", "label", "split")
MAX_LABEL = 4

MODEL_FILE = "model.txt"
FEATURES_FILE = "feature_names.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"  # written last: it marks a complete export (the registry's contract)
FORMAT_VERSION = 1

# (user_ids, item_ids) of the training rows -> (two-tower score, rank) of each pair.
RetrievalScorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class FeatureMismatchError(ValueError):
    """A feature matrix was built with a different feature list than the model was trained on."""

    def __init__(self, expected: Sequence[str], got: Sequence[str], what: str = "the feature matrix") -> None:
        missing = [n for n in expected if n not in got]
        unexpected = [n for n in got if n not in expected]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if not parts:
            parts.append(f"same names in another order: expected {list(expected)}, got {list(got)}")
        super().__init__(
            f"feature mismatch: the ranker expects {len(expected)} features, {what} has {len(got)}; "
            + "; ".join(parts)
            + ". Retrain the ranker or build features with its feature list."
        )
        self.missing = missing
        self.unexpected = unexpected


# -- pairs and features --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankingPairs:
    """(user, post) pairs to rank, pointing into one table of user rows and one table of post rows.

    Keeping user and post rows apart means a user's lists (selected and affinity tags) are stored once
    however many candidates the user has; every pair only carries two row numbers and its two-tower
    score and rank.

    Attributes:
        users: user rows with at least ``USER_COLUMNS`` (``user_features`` columns).
        items: post rows with at least ``ITEM_COLUMNS`` (``item_features`` columns).
        user_row: (n,) row of ``users`` for each pair.
        item_row: (n,) row of ``items`` for each pair.
        retrieval_score: (n,) two-tower score of each pair.
        retrieval_rank: (n,) 1-based rank of the post in the user's two-tower retrieval.
    """

    users: pa.Table
    items: pa.Table
    user_row: np.ndarray
    item_row: np.ndarray
    retrieval_score: np.ndarray
    retrieval_rank: np.ndarray

    def __post_init__(self) -> None:
        require_columns(self.users, USER_COLUMNS, "user rows")
        require_columns(self.items, ITEM_COLUMNS, "item rows")
        n = len(self.user_row)
        for name in ("item_row", "retrieval_score", "retrieval_rank"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"RankingPairs.{name} has {len(getattr(self, name))} entries, user_row has {n}"
                )
        for name, rows, limit in (
            ("user_row", self.user_row, self.users.num_rows),
            ("item_row", self.item_row, self.items.num_rows),
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
            items=rows.select(list(ITEM_COLUMNS)),
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
            items=items,
            user_row=user_row,
            item_row=item_row,
            retrieval_score=_numeric(candidates, "retrieval_score"),
            retrieval_rank=_numeric(candidates, "retrieval_rank"),
        )


def ranker_features(pairs: RankingPairs, retrieval_depth: int) -> np.ndarray:
    """The feature matrix of ``pairs``, columns in ``FEATURE_NAMES`` order; used by training and serving.

    ``retrieval_rank`` is capped at ``retrieval_depth + 1``: training ranks are ranks within the user's
    top-``retrieval_depth`` retrieval (``retrieval_depth + 1`` when the post was outside it), so deeper
    serving candidates look exactly like "outside the top". ``tag_affinity`` is the sum of the user's
    affinity weights over the post's tags, ``selected_tag_overlap`` the number of the post's tags the
    user selected at sign-up. Missing numbers stay NaN (LightGBM treats them as missing).

    Args:
        pairs: the pairs to describe.
        retrieval_depth: the depth the ranker was trained with.

    Returns:
        (len(pairs), len(FEATURE_NAMES)) float32 matrix.

    Raises:
        ValueError: a list column is malformed (the message names the row).
    """
    if retrieval_depth < 1:
        raise ValueError(f"retrieval_depth must be >= 1, got {retrieval_depth}")
    columns: dict[str, np.ndarray] = {
        "retrieval_score": pairs.retrieval_score,
        "retrieval_rank": np.minimum(pairs.retrieval_rank, retrieval_depth + 1),
    }
    for name, column in ITEM_NUMERIC_FEATURES.items():
        columns[name] = _numeric(pairs.items, column)[pairs.item_row]
    for name, column in USER_NUMERIC_FEATURES.items():
        columns[name] = _numeric(pairs.users, column)[pairs.user_row]
    columns["tag_affinity"], columns["selected_tag_overlap"] = _tag_overlaps(pairs)
    matrix = np.empty((len(pairs), len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        matrix[:, j] = columns[name]
    return matrix


# Above this many (user, tag) cells the overlaps use sorted keys instead of a dense table.
_DENSE_TAG_TABLE_CELLS = 1 << 24


def _tag_overlaps(pairs: RankingPairs) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: sum of the user's affinity weights over the post's tags, and count of selected tags.

    Tags become integer codes of one shared vocabulary; a (user row, tag code) pair becomes one int64
    key, so both overlaps are a sorted-key lookup of every (pair, post tag) against the user side.
    """
    item_len, item_codes, aff_len, aff_codes, sel_len, sel_codes = _encode_tags(pairs.users, pairs.items)
    aff_weights = _flat_numbers(pairs.users.column("affinity_weights"))
    weight_len = _list_lengths(pairs.users.column("affinity_weights"))
    bad = np.flatnonzero(weight_len != aff_len)
    if len(bad):
        raise ValueError(
            f"user row {bad[0]}: {aff_len[bad[0]]} affinity_tags but {weight_len[bad[0]]} affinity_weights"
        )
    vocab = int(max(item_codes.max(initial=-1), aff_codes.max(initial=-1), sel_codes.max(initial=-1))) + 1

    # Expand every pair into one entry per tag of its post.
    per_pair = item_len[pairs.item_row]
    pair_of_entry = np.repeat(np.arange(len(pairs), dtype=np.int64), per_pair)
    item_start = np.cumsum(item_len) - item_len
    entry_start = np.cumsum(per_pair) - per_pair
    within = np.arange(len(pair_of_entry), dtype=np.int64) - np.repeat(entry_start, per_pair)
    entry_code = item_codes[np.repeat(item_start[pairs.item_row], per_pair) + within]
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


def _encode_tags(users: pa.Table, items: pa.Table) -> tuple[np.ndarray, ...]:
    item_tags = _flat_strings(items.column("tags"))
    users_aff = _flat_strings(users.column("affinity_tags"))
    users_sel = _flat_strings(users.column("selected_tags"))
    vocabulary = pc.unique(pa.concat_arrays([item_tags, users_aff, users_sel]).drop_null())

    def codes(values: pa.Array) -> np.ndarray:
        return pc.index_in(values, value_set=vocabulary).fill_null(-1).to_numpy().astype(np.int64)

    return (
        _list_lengths(items.column("tags")),
        codes(item_tags),
        _list_lengths(users.column("affinity_tags")),
        codes(users_aff),
        _list_lengths(users.column("selected_tags")),
        codes(users_sel),
    )


def _list_lengths(column: pa.ChunkedArray) -> np.ndarray:
    return pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)


def _flat_strings(column: pa.ChunkedArray) -> pa.Array:
    flat = pc.list_flatten(column)
    flat = flat.combine_chunks() if isinstance(flat, pa.ChunkedArray) else flat
    return flat.cast(pa.string())


def _flat_numbers(column: pa.ChunkedArray) -> np.ndarray:
    flat = pc.list_flatten(column)
    return pc.cast(flat, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _numeric(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as float64 (decimals and ints included); nulls become NaN."""
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


# -- the model -----------------------------------------------------------------------------------------
class Ranker:
    """A trained lambdarank model and the ordered feature names it expects.

    Args:
        booster: the LightGBM model.
        feature_names: the names the model was trained on, in matrix column order.
        retrieval_depth: the depth its retrieval ranks were capped at (see :func:`ranker_features`).
        num_threads: threads used for scoring.
        metrics: evaluation metrics from training, when known.

    Raises:
        FeatureMismatchError: ``feature_names`` disagree with the names stored inside ``booster``.
    """

    def __init__(
        self,
        booster: lgb.Booster,
        feature_names: Sequence[str],
        retrieval_depth: int,
        num_threads: int = 1,
        metrics: dict[str, float] | None = None,
    ) -> None:
        if list(booster.feature_name()) != list(feature_names):
            raise FeatureMismatchError(feature_names, booster.feature_name(), "the LightGBM model file")
        self.booster = booster
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.retrieval_depth = retrieval_depth
        self.num_threads = num_threads
        self.metrics = dict(metrics or {})
        self._compiled: Any = None

    def compile(self, cache_dir: Path | None = None) -> Ranker:
        """Score with the trees compiled to native code (lleaves over LLVM) from now on.

        On 2 cores a 200-tree model scores about 6x more rows per second than ``Booster.predict``; the
        scores equal LightGBM's up to floating-point summation order (differences near 1e-14). The
        compiled object is cached in ``cache_dir`` (default: the system temp folder) under a SHA-256 of
        the model text, the lleaves and llvmlite versions and the host CPU, so the shard tasks of one
        worker compile a model once; a cache file appears whole or not at all.

        Returns:
            self, for chaining.
        """
        from importlib.metadata import version

        import lleaves
        import llvmlite.binding as llvm

        text = self.booster.model_to_string()
        build = [
            version("lleaves"),
            version("llvmlite"),
            llvm.get_host_cpu_name(),
            llvm.get_host_cpu_features().flatten(),
        ]
        key = hashlib.sha256("\n".join([text, *build]).encode()).hexdigest()[:24]
        folder = cache_dir or Path(tempfile.gettempdir()) / "nightfeed-compiled-rankers"
        folder.mkdir(parents=True, exist_ok=True)
        cached = folder / f"ranker-{key}.so"
        with tempfile.TemporaryDirectory(dir=folder) as work:
            model_file = Path(work) / "model.txt"
            model_file.write_text(text)
            model = lleaves.Model(model_file=str(model_file))
            if cached.exists():
                model.compile(cache=str(cached))
            else:
                started = time.perf_counter()
                fresh = Path(work) / cached.name
                model.compile(cache=str(fresh))
                os.replace(fresh, cached)
                log.info(
                    "compiled ranker (%d trees) in %.1f s to %s",
                    self.booster.num_trees(),
                    time.perf_counter() - started,
                    cached,
                )
        self._compiled = model
        return self

    def score(self, features: np.ndarray, feature_names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
        """Ranking scores (higher first) of the rows of ``features``.

        Args:
            features: (n, len(feature_names)) matrix from :func:`ranker_features`.
            feature_names: names of the matrix columns; defaults to this code's ``FEATURE_NAMES``.

        Returns:
            (n,) float64 scores; only their order within one user is meaningful.

        Raises:
            FeatureMismatchError: ``feature_names`` differ from the model's.
            ValueError: the matrix shape does not match ``feature_names``.
        """
        if tuple(feature_names) != self.feature_names:
            raise FeatureMismatchError(self.feature_names, feature_names)
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(feature_names):
            raise ValueError(f"features must be (n, {len(feature_names)}), got shape {features.shape}")
        if len(features) == 0:
            return np.zeros(0)
        if self._compiled is not None:
            matrix = np.ascontiguousarray(features, dtype=np.float64)
            return np.asarray(self._compiled.predict(matrix, n_jobs=self.num_threads), dtype=np.float64)
        return np.asarray(self.booster.predict(features, num_threads=self.num_threads), dtype=np.float64)

    def score_pairs(self, pairs: RankingPairs) -> np.ndarray:
        """Features and scores of ``pairs`` in one call (the serving path)."""
        return self.score(ranker_features(pairs, self.retrieval_depth))


@dataclass
class RankerResult:
    """A freshly trained ranker with its hold-out metrics, gain importance per feature and settings."""

    ranker: Ranker
    metrics: dict[str, float]
    config: RankerConfig
    importance: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _order_metrics(
    prefix: str, labels: np.ndarray, scores: np.ndarray, sizes: np.ndarray
) -> dict[str, float]:
    return {
        f"{prefix}ndcg_at_10": float(graded_ndcg_at_k(labels, scores, sizes, 10).mean()),
        f"{prefix}ndcg_at_5": float(graded_ndcg_at_k(labels, scores, sizes, 5).mean()),
        f"{prefix}map": float(average_precision(labels, scores, sizes).mean()),
    }


# -- training and evaluation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Split:
    rows: pa.Table
    group_sizes: np.ndarray
    source_rows: np.ndarray  # row numbers in the caller's table
    groups_without_positive: int

    @property
    def labels(self) -> np.ndarray:
        return self.rows.column("label").to_numpy()


def _prepare_split(rows: pa.Table, split: str) -> _Split:
    """Rows of one split sorted into (ds, user) groups, keeping only groups with a positive label.

    Rows are sorted by ``(ds, user_id, item_id)``, so score ties break by post id, never by the logged
    position or the label.
    """
    source = np.flatnonzero(
        pc.equal(rows.column("split"), split).fill_null(False).to_numpy(zero_copy_only=False)
    )
    part = rows.take(pa.array(source))
    order = pc.sort_indices(
        part, sort_keys=[("ds", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")]
    ).to_numpy()
    part = part.take(pa.array(order))
    source = source[order]
    keys = pd.DataFrame({"ds": part.column("ds").to_pandas(), "user_id": part.column("user_id").to_pandas()})
    new_group = np.r_[True, (keys.iloc[1:].to_numpy() != keys.iloc[:-1].to_numpy()).any(axis=1)]
    starts = np.flatnonzero(new_group[: part.num_rows])
    labels = part.column("label").to_numpy()
    has_positive = np.maximum.reduceat(labels, starts) > 0 if len(starts) else np.zeros(0, dtype=bool)
    sizes = np.diff(np.r_[starts, len(labels)])
    keep_rows = np.repeat(has_positive, sizes)
    return _Split(
        rows=part.filter(pa.array(keep_rows)),
        group_sizes=sizes[has_positive],
        source_rows=source[keep_rows],
        groups_without_positive=int((~has_positive).sum()),
    )


def _check_examples(rows: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(rows, pd.DataFrame):
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    require_columns(rows, (*EXAMPLE_KEY_COLUMNS, *ITEM_COLUMNS, *USER_COLUMNS), "ranking examples")
    for key in ("user_id", "item_id", "ds", "split"):
        if rows.column(key).null_count:
            first = int(np.flatnonzero(rows.column(key).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"ranking example row {first}: {key} is null")
    labels = rows.column("label")
    if not pa.types.is_integer(labels.type):
        raise ValueError(f"ranking examples: label must be an integer column, got {labels.type}")
    values = labels.fill_null(-1).to_numpy()
    bad = np.flatnonzero((values < 0) | (values > MAX_LABEL))
    if len(bad):
        raise ValueError(
            f"ranking example row {bad[0]}: label must be 0..{MAX_LABEL}, got {labels[int(bad[0])].as_py()!r}"
        )
    split = rows.column("split").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isin(split, ["train", "eval"]))
    if len(bad):
        raise ValueError(
            f"ranking example row {bad[0]}: split must be 'train' or 'eval', got {split[bad[0]]!r}"
        )
    return rows


def _require_groups(part: _Split, name: str) -> None:
    if len(part.group_sizes) == 0:
        raise ValueError(
            f"ranking examples: the {name} split has no (user, day) group with a positive label "
            f"({part.groups_without_positive} groups without one)"
        )


def _retrieval_inputs(
    rows: pa.Table, source_rows: np.ndarray, retrieval_scores: RetrievalScorer | np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two-tower score and rank of the pairs at ``source_rows`` of ``rows``, checked."""
    if callable(retrieval_scores):
        picked = rows.take(pa.array(source_rows))
        user_ids = picked.column("user_id").to_numpy(zero_copy_only=False)
        item_ids = picked.column("item_id").to_numpy(zero_copy_only=False)
        score, rank = retrieval_scores(user_ids, item_ids)
        score, rank = np.asarray(score, dtype=np.float64), np.asarray(rank, dtype=np.float64)
        where = "returned by retrieval_scores for"
    else:
        array = np.asarray(retrieval_scores, dtype=np.float64)
        if array.shape != (rows.num_rows, 2):
            raise ValueError(
                f"retrieval_scores array must be (n_rows, 2) = ({rows.num_rows}, 2) holding score and rank, "
                f"got shape {array.shape}"
            )
        score, rank = array[source_rows, 0], array[source_rows, 1]
        where = "given for"
    if score.shape != source_rows.shape or rank.shape != source_rows.shape:
        raise ValueError(
            f"retrieval_scores returned shapes {score.shape} and {rank.shape} for {len(source_rows)} pairs"
        )
    bad = np.flatnonzero(~np.isfinite(score))
    if len(bad):
        raise ValueError(
            f"retrieval score {where} ranking example row {source_rows[bad[0]]} is {score[bad[0]]}"
        )
    bad = np.flatnonzero((rank < 1) | (rank > depth + 1) | (rank != np.round(rank)))
    if len(bad):
        raise ValueError(
            f"retrieval rank {where} ranking example row {source_rows[bad[0]]} is {rank[bad[0]]}; expected "
            f"an integer in 1..{depth + 1} (retrieval_depth + 1 = outside the top {depth})"
        )
    return score, rank


def _holdout_metrics(
    ranker: Ranker, evaluation: _Split, features: np.ndarray, retrieval_score: np.ndarray
) -> dict[str, float]:
    """Ranker order vs retrieval-only order (and the logged feed order when known) on the eval groups."""
    labels, sizes = evaluation.labels, evaluation.group_sizes
    metrics = _order_metrics("", labels, ranker.score(features), sizes)
    metrics |= _order_metrics("retrieval_", labels, retrieval_score, sizes)
    if "position" in evaluation.rows.column_names:
        position = _numeric(evaluation.rows, "position")
        metrics |= _order_metrics("logged_", labels, -np.nan_to_num(position, nan=np.inf), sizes)
    metrics |= {
        "ndcg_at_10_lift": metrics["ndcg_at_10"] - metrics["retrieval_ndcg_at_10"],
        "eval_rows": float(len(labels)),
        "eval_groups": float(len(sizes)),
        "eval_groups_without_positive": float(evaluation.groups_without_positive),
    }
    return metrics


def evaluate_ranker(
    ranker: Ranker,
    rows: pa.Table | pd.DataFrame,
    retrieval_scores: RetrievalScorer | np.ndarray,
    config: RankerConfig,
) -> dict[str, float]:
    """Metrics of ``ranker`` on the eval split of ``rows``, e.g. the champion on a challenger's hold-out.

    The champion gate compares a challenger with the champion on the SAME hold-out; this gives the
    champion's side of that comparison with exactly the metrics :func:`train_ranker` reports.

    Args:
        ranker: a trained (typically loaded) ranker.
        rows: ranking examples as for :func:`train_ranker`; only ``split == 'eval'`` rows are used.
        retrieval_scores: as for :func:`train_ranker` (a callable sees only the eval pairs it needs).
        config: ``retrieval_depth``, the bound the given ranks are checked against.

    Returns:
        ``ndcg_at_10``, ``ndcg_at_5``, ``map``, the ``retrieval_`` (and ``logged_``) baselines,
        ``ndcg_at_10_lift`` and the eval row and group counts.

    Raises:
        ValueError: malformed rows or retrieval inputs, or no eval group with a positive label.
        FeatureMismatchError: the ranker was trained on another feature list than this code builds.
    """
    rows = _check_examples(rows)
    evaluation = _prepare_split(rows, "eval")
    _require_groups(evaluation, "eval")
    score, rank = _retrieval_inputs(rows, evaluation.source_rows, retrieval_scores, config.retrieval_depth)
    features = ranker_features(
        RankingPairs.from_examples(evaluation.rows, score, rank), ranker.retrieval_depth
    )
    return _holdout_metrics(ranker, evaluation, features, score)


def train_ranker(
    rows: pa.Table | pd.DataFrame,
    retrieval_scores: RetrievalScorer | np.ndarray,
    config: RankerConfig,
) -> RankerResult:
    """Train the lambdarank ranker on logged impressions and compare it with retrieval-only order.

    Query groups are one user's impressions of one day. Groups without any positive label give
    lambdarank no pair to learn from and NDCG is undefined for them, so they are dropped from both splits
    (and counted). Boosting stops early on NDCG@10 of the eval split, and the same eval groups then give
    the reported metrics, for the ranker and for the two-tower order (rows sorted by
    ``retrieval_score``); choosing the number of trees there makes the ranker's figure slightly
    optimistic.

    Args:
        rows: rows of ``sql/training/ranking_dataset.sql``: ``user_id, item_id, ds, label, split`` and
            the item and user feature columns (``ITEM_COLUMNS``, ``USER_COLUMNS``); ``position``
            optional (adds the logged feed order as a baseline).
        retrieval_scores: the champion two-tower's score and rank of each row's pair, either a callable
            ``(user_ids, item_ids) -> (score, rank)`` over aligned arrays (called once, with the pairs
            of the kept groups only), or an ``(n_rows, 2)`` array of score and rank aligned with
            ``rows``. The rank is the post's 1-based rank within the user's top-``retrieval_depth``
            two-tower retrieval, ``retrieval_depth + 1`` when it is outside it.
        config: tree shape, learning rate, rounds, early stopping, threads, seed and retrieval depth.

    Returns:
        The ranker (trees up to the best iteration) with metrics: ``ndcg_at_10`` (the key the champion
        gate reads), ``ndcg_at_5``, ``map``, the same with a ``retrieval_`` prefix for the two-tower
        order (and ``logged_`` for the logged feed order when ``position`` is given),
        ``ndcg_at_10_lift``, row, group and dropped-group counts, ``best_iteration``.

    Raises:
        ValueError: missing columns, bad labels, splits or retrieval inputs (the message names the row),
            or a split left without any group that has a positive label.
    """
    started = time.perf_counter()
    rows = _check_examples(rows)
    train, evaluation = _prepare_split(rows, "train"), _prepare_split(rows, "eval")
    _require_groups(train, "train")
    _require_groups(evaluation, "eval")
    depth = config.retrieval_depth
    kept = np.concatenate([train.source_rows, evaluation.source_rows])
    score, rank = _retrieval_inputs(rows, kept, retrieval_scores, depth)
    n_train = len(train.source_rows)
    x_train = ranker_features(RankingPairs.from_examples(train.rows, score[:n_train], rank[:n_train]), depth)
    x_eval = ranker_features(
        RankingPairs.from_examples(evaluation.rows, score[n_train:], rank[n_train:]), depth
    )
    elapsed = time.perf_counter() - started
    log.info(
        "ranker examples: %d train and %d eval rows ready in %.2f s (%.0f rows/s)",
        len(x_train),
        len(x_eval),
        elapsed,
        (len(x_train) + len(x_eval)) / max(elapsed, 1e-9),
    )

    params: dict[str, Any] = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.num_threads,
        "verbosity": -1,
    }
    names = list(FEATURE_NAMES)
    train_set = lgb.Dataset(x_train, label=train.labels, group=train.group_sizes, feature_name=names)
    eval_set = lgb.Dataset(x_eval, label=evaluation.labels, group=evaluation.group_sizes, reference=train_set)
    fit_started = time.perf_counter()
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[eval_set],
        valid_names=["eval"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees up to the best iteration, so the saved and the in-memory model are the same.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    ranker = Ranker(booster, FEATURE_NAMES, depth, num_threads=config.num_threads)
    fit_seconds = time.perf_counter() - fit_started

    metrics = _holdout_metrics(ranker, evaluation, x_eval, score[n_train:])
    metrics |= {
        "train_rows": float(len(x_train)),
        "train_groups": float(len(train.group_sizes)),
        "train_groups_without_positive": float(train.groups_without_positive),
        "best_iteration": float(best),
        "fit_seconds": round(fit_seconds, 3),
    }
    ranker.metrics = dict(metrics)
    gains = booster.feature_importance(importance_type="gain")
    importance = {name: float(g) for name, g in zip(FEATURE_NAMES, gains, strict=True)}
    log.info(
        "ranker: %d trees in %.1f s; eval NDCG@10 %.4f vs retrieval-only %.4f over %d groups",
        best,
        fit_seconds,
        metrics["ndcg_at_10"],
        metrics["retrieval_ndcg_at_10"],
        len(evaluation.group_sizes),
    )
    return RankerResult(ranker=ranker, metrics=metrics, config=config, importance=importance, params=params)


# -- lake I/O ------------------------------------------------------------------------------------------
def save_ranker(result: RankerResult, lake: Lake, version: str) -> str:
    """Export a trained ranker to ``models/ranker/<version>/``, ``config.json`` last.

    The folder follows the registry's export contract: a version without ``config.json`` is an
    unfinished export, and only :func:`pipelines.training.registry.promote_if_blessed` makes it the champion.

    Args:
        result: from :func:`train_ranker`.
        lake: the lake.
        version: a new version name from :func:`pipelines.training.registry.new_version`.

    Returns:
        The URI of the version folder.

    Raises:
        ValueError: a malformed version name.
        FileExistsError: that version was already exported (versions are never overwritten).
    """
    model_dir = LakePaths.model_dir(RANKER, check_version(version))
    if lake.exists(f"{model_dir}/{CONFIG_FILE}"):
        raise FileExistsError(f"{lake.uri(model_dir)} already holds an exported ranker {version!r}")
    ranker = result.ranker
    lake.write_bytes(f"{model_dir}/{MODEL_FILE}", ranker.booster.model_to_string().encode())
    lake.write_json(f"{model_dir}/{FEATURES_FILE}", list(ranker.feature_names))
    lake.write_json(f"{model_dir}/{METRICS_FILE}", {**result.metrics, "version": version})
    lake.write_json(
        f"{model_dir}/{CONFIG_FILE}",
        {
            "kind": RANKER,
            "version": version,
            "format_version": FORMAT_VERSION,
            "retrieval_depth": ranker.retrieval_depth,
            "num_threads": ranker.num_threads,
            "num_trees": ranker.booster.num_trees(),
            "lightgbm_version": lgb.__version__,
            "ranker": result.config.model_dump(),
            "params": result.params,
            "importance": result.importance,
        },
    )
    log.info("exported ranker %s to %s", version, lake.uri(model_dir))
    return lake.uri(model_dir)


def load_ranker(lake: Lake, version: str) -> Ranker:
    """Read the exported ranker ``version`` from the lake.

    Raises:
        ValueError: a malformed version name, or a format this code does not read.
        FileNotFoundError: no complete export of ``version`` (``config.json`` missing).
        FeatureMismatchError: the stored feature list disagrees with the model file.
    """
    model_dir = LakePaths.model_dir(RANKER, check_version(version))
    if not lake.exists(f"{model_dir}/{CONFIG_FILE}"):
        raise FileNotFoundError(f"no complete ranker export at {lake.uri(model_dir)} ({CONFIG_FILE} missing)")
    saved = lake.read_json(f"{model_dir}/{CONFIG_FILE}")
    if saved.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{lake.uri(model_dir)}/{CONFIG_FILE}: format_version {saved.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    metrics = lake.read_json(f"{model_dir}/{METRICS_FILE}")
    metrics.pop("version", None)
    return Ranker(
        lgb.Booster(model_str=lake.read_bytes(f"{model_dir}/{MODEL_FILE}").decode()),
        lake.read_json(f"{model_dir}/{FEATURES_FILE}"),
        retrieval_depth=int(saved["retrieval_depth"]),
        num_threads=int(saved["num_threads"]),
        metrics=metrics,
    )
