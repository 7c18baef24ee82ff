"""MovieLens-format ratings as raw tables: the 100k layout (``u.data``, ``u.item``, ``u.user``), the 1M/10M
layout (``ratings.dat``, ``movies.dat``, ``::``-separated) and the CSV layout of the latest, 20M and 25M
releases (``ratings.csv``, ``movies.csv``).

A rating is an engagement, never an impression (a ratings log records no feed): every rating becomes a
``click`` and a rating of at least 4 also an ``upvote``. Genres become tags; a movie's creation time is its
first rating and a user's sign-up their first rating.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.core.settings import QualityConfig
from pipelines.core.warehouse import Warehouse
from pipelines.data.importer import ImportReport, load_tables
from pipelines.data.input_files import InputFileError, typed_with_ds, utf8_column

UPVOTE_RATING = 4.0
GENRES_100K = (
    "unknown", "action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama",
    "fantasy", "film-noir", "horror", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western",
)  # fmt: skip


def _read_delimited(path: Path, names: list[str], delimiter: str, header: bool, encoding: str) -> pa.Table:
    """A text table with ``names`` columns, every value as text.

    Raises:
        InputFileError: the file is missing, or a line has the wrong number of fields (file and line named).
    """
    if not path.is_file():
        raise InputFileError(f"{path}: MovieLens file not found")
    data = path.read_bytes()
    if delimiter == "::":  # pyarrow takes one-character delimiters only
        data, delimiter = data.replace(b"::", b"\x1f"), "\x1f"
    if encoding != "utf-8":
        data = data.decode(encoding).encode("utf-8")
    bad: list[tuple[int | None, int, int]] = []

    def keep_first_bad_row(row: pacsv.InvalidRow) -> str:
        bad.append((row.number, row.actual_columns, row.expected_columns))
        return "skip"

    read = pacsv.ReadOptions(column_names=None if header else names, use_threads=False)
    parse = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if delimiter == "," else False,
        invalid_row_handler=keep_first_bad_row,
    )
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary()), include_columns=names)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data), read_options=read, parse_options=parse, convert_options=convert
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise InputFileError(f"{path}: {exc}") from exc
    if bad:
        number, got, expected = bad[0]
        raise InputFileError(f"{path}: line {number} has {got} fields, expected {expected}")
    return pa.table({name: utf8_column(table.column(name), f"{path}: column {name!r}") for name in names})


def _ratings(folder: Path) -> tuple[pa.Table, str, Path]:
    """``user, item, rating, ts`` as text, the layout found and the ratings file."""
    names = ["user", "item", "rating", "ts"]
    if (folder / "u.data").is_file():
        return _read_delimited(folder / "u.data", names, "\t", False, "utf-8"), "100k", folder / "u.data"
    if (folder / "ratings.dat").is_file():
        path = folder / "ratings.dat"
        return _read_delimited(path, names, "::", False, "latin-1"), "dat", path
    if (folder / "ratings.csv").is_file():
        path = folder / "ratings.csv"
        table = _read_delimited(path, ["userId", "movieId", "rating", "timestamp"], ",", True, "utf-8")
        return table.rename_columns(names), "csv", path
    raise InputFileError(f"{folder}: no MovieLens ratings (u.data, ratings.dat or ratings.csv)")


def _numbers(ratings: pa.Table, column: str, kind: pa.DataType, path: Path) -> np.ndarray:
    """Column ``column`` of the ratings as numbers; an error names the file, the row and the value."""
    try:
        return pc.cast(ratings.column(column), kind).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        values = ratings.column(column).to_pylist()
        for i, value in enumerate(values):
            try:
                pa.array([value]).cast(kind)
            except pa.ArrowInvalid:
                raise InputFileError(f"{path}: row {i + 1}: {column} {value!r} is not a number") from exc
        raise


def _movies(folder: Path, layout: str) -> pa.Table:
    """``item, title, genres`` (genres as a list of lower-case tags)."""
    if layout == "100k":
        names = ["item", "title", "released", "video", "url", *[f"g{i}" for i in range(len(GENRES_100K))]]
        raw = _read_delimited(folder / "u.item", names, "|", False, "latin-1")
        flags = np.column_stack(
            [raw.column(f"g{i}").to_numpy(zero_copy_only=False) == "1" for i in range(19)]
        )
        genres = [[g for g, on in zip(GENRES_100K, row, strict=True) if on] for row in flags]
        return pa.table({"item": raw.column("item"), "title": raw.column("title"), "genres": genres})
    path, delimiter, header, encoding = (
        (folder / "movies.dat", "::", False, "latin-1")
        if layout == "dat"
        else (folder / "movies.csv", ",", True, "utf-8")
    )
    raw = _read_delimited(
        path,
        ["movieId", "title", "genres"] if header else ["item", "title", "genres"],
        delimiter,
        header,
        encoding,
    )
    raw = raw.rename_columns(["item", "title", "genres"])
    lowered = pc.utf8_lower(raw.column("genres"))
    split = pc.split_pattern(lowered, "|")
    genres = [[g for g in row if g and g != "(no genres listed)"] for row in split.to_pylist()]
    return pa.table({"item": raw.column("item"), "title": raw.column("title"), "genres": genres})


def read_movielens(folder: str | Path) -> dict[str, pa.Table]:
    """Map a MovieLens release in ``folder`` onto the raw tables.

    Raises:
        InputFileError: no ratings file, a malformed line, bytes that are not UTF-8, or a rating or
            timestamp that is not a number (the file and the line or row are named).
    """
    folder = Path(folder)
    ratings, layout, path = _ratings(folder)
    stars = _numbers(ratings, "rating", pa.float64(), path)
    seconds = _numbers(ratings, "ts", pa.int64(), path)
    user = pc.binary_join_element_wise("ml-u", ratings.column("user"), "")
    item = pc.binary_join_element_wise("ml-i", ratings.column("item"), "")
    row = pa.array(np.arange(ratings.num_rows).astype(str))
    upvote = np.flatnonzero(stars >= UPVOTE_RATING)
    micros = seconds * 1_000_000
    events = pa.table(
        {
            "event_id": pa.concat_arrays(
                [
                    pc.binary_join_element_wise("ml-", row, "-c", ""),
                    pc.binary_join_element_wise("ml-", row.take(upvote), "-u", ""),
                ]
            ),
            "user_id": pa.concat_arrays([user.combine_chunks(), user.combine_chunks().take(upvote)]),
            "item_id": pa.concat_arrays([item.combine_chunks(), item.combine_chunks().take(upvote)]),
            "event_type": pa.array(["click"] * ratings.num_rows + ["upvote"] * len(upvote)),
            "event_ts": pa.array(np.concatenate([micros, micros[upvote] + 1]), pa.timestamp("us", tz="UTC")),
            "position": pa.nulls(ratings.num_rows + len(upvote), pa.int64()),
        }
    )
    first = pa.table({"user_id": user, "item_id": item, "ts": pa.array(micros)})
    item_first = first.group_by("item_id").aggregate([("ts", "min")])
    user_first = first.group_by("user_id").aggregate([("ts", "min")])

    movies = _movies(folder, layout)
    movies = movies.append_column("item_id", pc.binary_join_element_wise("ml-i", movies.column("item"), ""))
    # Movies nobody rated are left out; the rest take their first rating's time (Arrow joins cannot carry
    # the genre lists, so the first times are looked up by position).
    movies = movies.sort_by("item_id")
    first_of = pc.index_in(movies.column("item_id"), value_set=item_first.column("item_id"))
    rated = movies.filter(pc.is_valid(first_of))
    rated = rated.append_column("ts_min", item_first.column("ts_min").take(first_of.drop_null()))
    n_items = rated.num_rows
    items = pa.table(
        {
            "item_id": rated.column("item_id"),
            "title": rated.column("title"),
            "summary": pa.array([", ".join(g) for g in rated.column("genres").to_pylist()]),
            "tags": rated.column("genres"),
            "source": pa.array(["movielens"] * n_items),
            "author": pa.array(["unknown"] * n_items),
            "post_type": pa.array(["video"] * n_items),
            "content_type": pa.array(["video"] * n_items),
            "language": pa.array(["en"] * n_items),
            "url": pc.binary_join_element_wise("https://movielens.org/movies/", rated.column("item"), ""),
            "created_at": pc.cast(rated.column("ts_min"), pa.timestamp("us", tz="UTC")),
            "deleted": pa.array([False] * n_items),
        }
    )
    user_first = user_first.sort_by("user_id")
    n_users = user_first.num_rows
    users = pa.table(
        {
            "user_id": user_first.column("user_id"),
            "email": pa.nulls(n_users, pa.string()),
            "signup_ts": pc.cast(user_first.column("ts_min"), pa.timestamp("us", tz="UTC")),
            "language": pa.array(["en"] * n_users),
            "selected_tags": pa.array([[]] * n_users, pa.list_(pa.string())),
            "blocked_tags": pa.array([[]] * n_users, pa.list_(pa.string())),
            "blocked_sources": pa.array([[]] * n_users, pa.list_(pa.string())),
            "digest_opt_in": pa.array([False] * n_users),
            "digest_frequency": pa.array(["weekly"] * n_users),
            "digest_weekday": pa.array([0] * n_users, pa.int64()),
            "timezone": pa.array(["UTC"] * n_users),
        }
    )
    origin = str(folder)
    return {
        "raw_events": typed_with_ds(events, "raw_events", origin),
        "raw_items": typed_with_ds(items, "raw_items", origin),
        "raw_users": typed_with_ds(users, "raw_users", origin),
    }


def import_movielens(
    warehouse: Warehouse,
    folder: str | Path,
    quality: QualityConfig | None = None,
    now: dt.datetime | None = None,
    scratch_dir: str | Path | None = None,
) -> ImportReport:
    """Load a MovieLens release from ``folder`` into the raw tables, one ``ds`` partition at a time.

    Raises:
        InputFileError: as for :func:`read_movielens`, or the ratings file has no rows.
    """
    return load_tables(warehouse, read_movielens(folder), str(folder), quality, now, scratch_dir)
