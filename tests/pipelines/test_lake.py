"""The local lake: atomic objects and write-audit-publish with manifests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.lake import Lake, ManifestError, PublishConflict

DATASET = "candidates/ds=2026-11-22"


def _stage(lake: Lake, rows: int, staging_id: str | None = None) -> str:
    staging = lake.begin_publish(DATASET, staging_id)
    lake.write_parquet(f"{staging}/shard=000.parquet", pa.table({"x": list(range(rows))}))
    return staging


def _visible_rows(lake: Lake) -> int:
    return sum(lake.read_parquet(f).num_rows for f in lake.manifest_files(DATASET))


def test_objects_round_trip_and_leave_no_temp_files(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_json("a/b.json", {"k": 1})
    lake.write_bytes("a/c.bin", b"\x00\x01")
    assert lake.read_json("a/b.json") == {"k": 1}
    assert lake.read_bytes("a/c.bin") == b"\x00\x01"
    assert lake.ls("a") == ["b.json", "c.bin"]


def test_an_object_written_in_pieces_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with lake.open_write("a/big.jsonl") as fh:
        for n in range(3):
            fh.write(f"line {n}\n".encode())
        assert not lake.exists("a/big.jsonl"), "nothing is visible before the block ends"
    assert lake.read_bytes("a/big.jsonl") == b"line 0\nline 1\nline 2\n"
    with pytest.raises(RuntimeError, match="render failed"), lake.open_write("a/big.jsonl") as fh:
        fh.write(b"half a shard")
        raise RuntimeError("render failed")
    assert lake.read_bytes("a/big.jsonl") == b"line 0\nline 1\nline 2\n", "the old object stays"
    assert lake.ls("a") == ["big.jsonl"], "no temp file is left"


def test_parquet_reads_all_columns_some_or_those_present(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_parquet("t.parquet", pa.table({"a": [1, 2], "b": ["x", "y"]}))
    assert lake.read_parquet("t.parquet").column_names == ["a", "b"]
    assert lake.read_parquet("t.parquet", ["b"]).column("b").to_pylist() == ["x", "y"]
    assert lake.read_parquet("t.parquet", ["b", "c"], present_only=True).column_names == ["b"]
    with pytest.raises(pa.ArrowInvalid, match=r"FieldRef.Name\(c\)"):
        lake.read_parquet("t.parquet", ["b", "c"])


def test_unpublished_data_is_invisible(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _stage(lake, 3)
    assert not lake.is_published(DATASET)
    with pytest.raises(ManifestError, match="no published manifest"):
        lake.manifest_files(DATASET)


def test_publish_then_replace_whole(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    first = _stage(lake, 3, "20260101T000000-a")
    lake.publish(DATASET, first, ["shard=000.parquet"], metadata={"rows": 3})
    assert _visible_rows(lake) == 3
    second = _stage(lake, 5, "20260101T000001-b")
    manifest = lake.publish(DATASET, second, ["shard=000.parquet"])
    assert _visible_rows(lake) == 5
    assert manifest["staging"] == "20260101T000001-b"
    # The superseded staging folder is gone; only the published one and the manifest remain.
    assert lake.ls(DATASET) == ["_MANIFEST.json", "_MANIFEST.json.lock", "run=20260101T000001-b"]


def test_a_killed_run_leaves_the_previous_version_visible(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.publish(DATASET, _stage(lake, 3, "20260101T000000-a"), ["shard=000.parquet"])
    # A later run writes one shard of two and dies before publishing.
    _stage(lake, 7, "20260101T000005-c")
    assert _visible_rows(lake) == 3
    # Its retry completes: the new version becomes visible at once.
    retry = _stage(lake, 7, "20260101T000009-d")
    lake.write_parquet(f"{retry}/shard=001.parquet", pa.table({"x": [1]}))
    lake.publish(DATASET, retry, ["shard=000.parquet", "shard=001.parquet"])
    assert _visible_rows(lake) == 8


def test_publish_refuses_missing_files_and_keeps_the_old_version(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.publish(DATASET, _stage(lake, 3, "20260101T000000-a"), ["shard=000.parquet"])
    staging = _stage(lake, 4, "20260101T000001-b")
    with pytest.raises(ManifestError, match=r"missing files \['shard=001.parquet'\]"):
        lake.publish(DATASET, staging, ["shard=000.parquet", "shard=001.parquet"])
    assert _visible_rows(lake) == 3


def test_a_concurrent_publisher_is_detected(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.publish(DATASET, _stage(lake, 3, "20260101T000000-a"), ["shard=000.parquet"])
    read_before = lake.read_pointer(f"{DATASET}/_MANIFEST.json").generation
    lake.publish(DATASET, _stage(lake, 4, "20260101T000001-b"), ["shard=000.parquet"])
    with pytest.raises(PublishConflict):
        lake.publish(
            DATASET,
            _stage(lake, 5, "20260101T000002-c"),
            ["shard=000.parquet"],
            expected_generation=read_before,
        )
    assert _visible_rows(lake) == 4


def test_create_only_pointer(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_pointer("models/x/champion.json", {"v": 1}, if_generation_match=0)
    with pytest.raises(PublishConflict):
        lake.write_pointer("models/x/champion.json", {"v": 2}, if_generation_match=0)
    assert lake.read_pointer("models/x/champion.json").content == {"v": 1}


def test_directories_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    lake = Lake(str(tmp_path / "lake"))
    lake.put_dir(src, "models/m/1")
    out = lake.get_dir("models/m/1", tmp_path / "out")
    assert (out / "a.txt").read_text() == "a" and (out / "sub" / "b.txt").read_text() == "b"
