"""MovieLens releases in their three layouts become raw tables: ratings are engagements, never impressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data.input_files import InputFileError
from pipelines.data.movielens import read_movielens


def _kinds(tables: dict) -> list[str]:
    return sorted(tables["raw_events"].column("event_type").to_pylist())


def _by_item(tables: dict, column: str) -> dict:
    items = tables["raw_items"]
    return dict(zip(items.column("item_id").to_pylist(), items.column(column).to_pylist(), strict=True))


def test_the_100k_layout(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881350949\n")
    flags_a = "|".join(["0"] * 3 + ["1", "1", "1"] + ["0"] * 13)  # animation, children, comedy
    flags_b = "|".join(["0", "1", "1"] + ["0"] * 16)  # action, adventure
    (tmp_path / "u.item").write_text(
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags_a}\n20|GoldenEye (1995)|01-Jan-1995||http://y|{flags_b}\n"
    )
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    tables = read_movielens(tmp_path)
    # Every rating is a click; 5 and 4 stars are also upvotes; no impression is made up.
    assert _kinds(tables) == ["click", "click", "click", "upvote", "upvote"]
    assert _by_item(tables, "tags") == {
        "ml-i10": ["animation", "children", "comedy"],
        "ml-i20": ["action", "adventure"],
    }
    users = tables["raw_users"]
    assert users.column("user_id").to_pylist() == ["ml-u1", "ml-u2"]
    # A user signs up at their first rating; a movie is created at its first rating.
    assert users.column("signup_ts")[0].as_py().timestamp() == 881250949
    assert tables["raw_items"].column("created_at")[0].as_py().timestamp() == 881250949


def test_the_dat_layout_of_1m(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::2::978302109\n")
    (tmp_path / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::"
        "Animation|Children's|Musical\n".encode("latin-1")
    )
    tables = read_movielens(tmp_path)
    assert _kinds(tables) == ["click", "click", "upvote"]
    assert _by_item(tables, "tags") == {
        "ml-i1193": ["drama"],
        "ml-i661": ["animation", "children's", "musical"],
    }


def test_the_csv_layout_of_the_latest_releases(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,"Grumpier Old Men, The (1995)",'
        "(no genres listed)\n"
    )
    tables = read_movielens(tmp_path)
    assert _kinds(tables) == ["click", "click", "upvote"]
    titles = dict(
        zip(*(tables["raw_items"].column(c).to_pylist() for c in ("item_id", "title")), strict=True)
    )
    assert titles == {"ml-i1": "Toy Story (1995)", "ml-i3": "Grumpier Old Men, The (1995)"}
    assert tables["raw_items"].column("tags").to_pylist() == [["adventure", "animation"], []]


def test_a_bad_line_is_named_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n1\t10\t5\n")
    with pytest.raises(InputFileError, match=r"u.data: line 2 has 3 fields, expected 4"):
        read_movielens(tmp_path)


def test_a_folder_without_ratings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no MovieLens ratings"):
        read_movielens(tmp_path)
