"""``Lake("gs://...")`` against fake-gcs-server, through the real gcsfs and google-cloud-storage clients.

fake-gcs-server enforces ``ifGenerationMatch`` on small multipart uploads (which is how pointers are
written), so the optimistic-concurrency paths of write-audit-publish are exercised for real.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.lake import Lake, ManifestError, PublishConflict
from pipelines.core.paths import MANIFEST_NAME
from pipelines.core.schema import CANDIDATES

pytestmark = pytest.mark.emulator

DATASET = "candidates/ds=2026-11-22"
# Staging ids sort by time, as new_staging_id() makes them.
RUN_1, RUN_2, RUN_3 = "20261122T010000-aaaaaaaa", "20261122T020000-bbbbbbbb", "20261122T030000-cccccccc"


@pytest.fixture
def lake(gcs_bucket: str) -> Lake:
    return Lake(f"gs://{gcs_bucket}/nightfeed")


@pytest.fixture
def bucket(gcs_bucket: str):
    """The bucket as another writer sees it: a separate google-cloud-storage client."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="other-writer", credentials=AnonymousCredentials()).bucket(gcs_bucket)


def _stage(lake: Lake, run: str, files: dict[str, bytes]) -> str:
    staging = lake.begin_publish(DATASET, run)
    for name, data in files.items():
        lake.write_bytes(f"{staging}/{name}", data)
    return staging


def test_bytes_json_and_parquet_round_trip(lake: Lake, bucket) -> None:
    lake.write_bytes("raw/blob.bin", b"\x00\x01nightfeed")
    lake.write_json("reports/metrics.json", {"recall_at_k": 0.25, "ds": dt.date(2026, 11, 22)})
    candidates = pa.table(
        {
            "user_id": ["u1", "u1", "u2"],
            "rank": pa.array([1, 2, 1], pa.int32()),
            "item_id": ["i9", "i3", "i3"],
            "score": pa.array([0.5, 0.25, 0.75], pa.float32()),
            "retrieval_score": pa.array([0.125, 0.0625, 0.5], pa.float32()),
            "reason": ["similar", None, "exploration"],
        },
        schema=CANDIDATES,
    )
    lake.write_parquet("candidates/shard=000.parquet", candidates)

    assert lake.read_bytes("raw/blob.bin") == b"\x00\x01nightfeed"
    # Dates are written with default=str.
    assert lake.read_json("reports/metrics.json") == {"recall_at_k": 0.25, "ds": "2026-11-22"}
    assert lake.read_parquet("candidates/shard=000.parquet").equals(candidates)
    assert lake.read_parquet("candidates/shard=000.parquet", columns=["item_id"]).column(0).to_pylist() == [
        "i9",
        "i3",
        "i3",
    ]
    # The columns of a list the file has, the others left out for the caller to report.
    present = lake.read_parquet("candidates/shard=000.parquet", ["item_id", "no_such"], present_only=True)
    assert present.column_names == ["item_id"] and present.num_rows == 3
    # Objects land under the lake's prefix, named as the user would paste them.
    assert bucket.get_blob("nightfeed/raw/blob.bin").download_as_bytes() == b"\x00\x01nightfeed"
    assert lake.uri("raw/blob.bin") == f"gs://{bucket.name}/nightfeed/raw/blob.bin"


def test_an_object_written_in_pieces_appears_whole_or_not_at_all(lake: Lake, bucket) -> None:
    # Larger than one upload block (5 MiB), so the upload is resumable and in progress when it fails.
    piece = bytes(range(256)) * 4096
    with lake.open_write("digests/shard=000.jsonl") as fh:
        for _ in range(6):
            fh.write(piece)
        assert bucket.get_blob("nightfeed/digests/shard=000.jsonl") is None
    assert lake.read_bytes("digests/shard=000.jsonl") == piece * 6
    for pieces in (6, 1):  # an upload in progress, and one never sent
        with pytest.raises(RuntimeError, match="render failed"), lake.open_write("digests/x.jsonl") as fh:
            for _ in range(pieces):
                fh.write(piece)
            raise RuntimeError("render failed")
        assert not lake.exists("digests/x.jsonl")
    assert lake.ls("digests") == ["shard=000.jsonl"]


def test_ls_exists_and_rm(lake: Lake) -> None:
    for rel in ("index/a.bin", "index/b.bin", "index/sub/c.bin", "other/d.bin"):
        lake.write_bytes(rel, rel.encode())

    assert lake.ls("index") == ["a.bin", "b.bin", "sub"]
    assert lake.ls("") == ["index", "other"]
    assert lake.ls("nothing") == []
    assert lake.exists("index/sub/c.bin")
    assert not lake.exists("index/sub/missing.bin")

    lake.rm("index/sub")
    assert lake.ls("index") == ["a.bin", "b.bin"]
    assert not lake.exists("index/sub/c.bin")
    lake.rm("index/a.bin")
    lake.rm("index/never-written.bin")  # absent: nothing to do
    assert lake.ls("index") == ["b.bin"]
    assert lake.read_bytes("other/d.bin") == b"other/d.bin"


def test_put_dir_and_get_dir_copy_a_nested_folder(lake: Lake, tmp_path: Path) -> None:
    model = tmp_path / "saved_model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(range(256)) * 40)

    lake.put_dir(model, "models/two_tower/v1")
    restored = lake.get_dir("models/two_tower/v1", tmp_path / "restored")

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files(restored) == files(model)
    assert len(files(restored)) == 3
    with pytest.raises(FileNotFoundError, match="models/ranker/v9"):
        lake.get_dir("models/ranker/v9", tmp_path / "none")


def test_staged_files_are_invisible_until_published(lake: Lake) -> None:
    _stage(lake, RUN_1, {"shard=000.parquet": b"0", "shard=001.parquet": b"1"})

    assert not lake.is_published(DATASET)
    with pytest.raises(ManifestError, match="no published manifest"):
        lake.manifest_files(DATASET)


def test_publish_makes_exactly_the_listed_files_visible(lake: Lake, bucket) -> None:
    staging = _stage(lake, RUN_1, {"shard=000.parquet": b"0", "shard=001.parquet": b"1", "extra.tmp": b"x"})

    listed = ["shard=001.parquet", "shard=000.parquet"]
    manifest = lake.publish(DATASET, staging, listed, metadata={"rows": 2})

    assert manifest["files"] == ["shard=000.parquet", "shard=001.parquet"]
    assert manifest["metadata"] == {"rows": 2}
    assert lake.read_manifest(DATASET) == manifest
    published = lake.manifest_files(DATASET)
    assert published == [f"{staging}/shard=000.parquet", f"{staging}/shard=001.parquet"]
    assert [lake.read_bytes(rel) for rel in published] == [b"0", b"1"]
    # The manifest is the newest object of the dataset: it was written after every data file.
    blobs = {b.name.rsplit("/", 1)[1]: b for b in bucket.list_blobs(prefix=f"nightfeed/{DATASET}/")}
    data_created = max(blobs[name].time_created for name in ("shard=000.parquet", "shard=001.parquet"))
    assert blobs[MANIFEST_NAME].time_created >= data_created


def test_second_publish_replaces_manifest_and_collects_older_staging(lake: Lake) -> None:
    first = _stage(lake, RUN_1, {"shard=000.parquet": b"old"})
    lake.publish(DATASET, first, ["shard=000.parquet"])
    second = _stage(lake, RUN_2, {"shard=000.parquet": b"new"})
    # A run that started later and is still writing must not lose its files.
    _stage(lake, RUN_3, {"shard=000.parquet": b"in progress"})

    lake.publish(DATASET, second, ["shard=000.parquet"])

    assert lake.manifest_files(DATASET) == [f"{second}/shard=000.parquet"]
    assert lake.read_bytes(lake.manifest_files(DATASET)[0]) == b"new"
    assert lake.ls(DATASET) == [MANIFEST_NAME, f"run={RUN_2}", f"run={RUN_3}"]


def test_publish_with_stale_expected_generation_conflicts(lake: Lake) -> None:
    first = _stage(lake, RUN_1, {"shard=000.parquet": b"1"})
    lake.publish(DATASET, first, ["shard=000.parquet"])
    seen = lake.read_pointer(f"{DATASET}/{MANIFEST_NAME}")
    # Another run publishes between our read and our write.
    second = _stage(lake, RUN_2, {"shard=000.parquet": b"2"})
    lake.publish(DATASET, second, ["shard=000.parquet"])
    third = _stage(lake, RUN_3, {"shard=000.parquet": b"3"})

    with pytest.raises(PublishConflict, match=f"{DATASET}/{MANIFEST_NAME}"):
        lake.publish(DATASET, third, ["shard=000.parquet"], expected_generation=seen.generation)

    assert lake.manifest_files(DATASET) == [f"{second}/shard=000.parquet"]
    current = lake.read_pointer(f"{DATASET}/{MANIFEST_NAME}").generation
    lake.publish(DATASET, third, ["shard=000.parquet"], expected_generation=current)
    assert lake.manifest_files(DATASET) == [f"{third}/shard=000.parquet"]


def test_read_pointer_returns_the_generation_of_its_content(lake: Lake, bucket) -> None:
    assert lake.read_pointer("models/ranker/champion.json").generation == 0
    assert lake.read_pointer("models/ranker/champion.json").content is None

    lake.write_pointer("models/ranker/champion.json", {"version": "v1"}, if_generation_match=0)
    lake.write_pointer("models/ranker/champion.json", {"version": "v2"}, if_generation_match=None)

    pointer = lake.read_pointer("models/ranker/champion.json")
    assert pointer.content == {"version": "v2"}
    assert pointer.generation == bucket.get_blob("nightfeed/models/ranker/champion.json").generation


def test_create_only_pointer_conflicts_when_it_exists(lake: Lake) -> None:
    lake.write_pointer("models/two_tower/champion.json", {"version": "v1"}, if_generation_match=0)

    with pytest.raises(PublishConflict, match=r"champion\.json"):
        lake.write_pointer("models/two_tower/champion.json", {"version": "v2"}, if_generation_match=0)

    assert lake.read_pointer("models/two_tower/champion.json").content == {"version": "v1"}


def test_publish_with_missing_file_keeps_old_manifest(lake: Lake) -> None:
    first = _stage(lake, RUN_1, {"shard=000.parquet": b"1"})
    before = lake.publish(DATASET, first, ["shard=000.parquet"])
    generation = lake.read_pointer(f"{DATASET}/{MANIFEST_NAME}").generation
    second = _stage(lake, RUN_2, {"shard=000.parquet": b"2"})

    with pytest.raises(ManifestError, match=r"missing files \['shard=001.parquet'\]"):
        lake.publish(DATASET, second, ["shard=000.parquet", "shard=001.parquet"])

    assert lake.read_manifest(DATASET) == before
    assert lake.read_pointer(f"{DATASET}/{MANIFEST_NAME}").generation == generation
    assert lake.read_bytes(lake.manifest_files(DATASET)[0]) == b"1"


def test_publisher_sees_shards_written_by_other_workers(lake: Lake, bucket) -> None:
    staging = _stage(lake, RUN_1, {"shard=000.parquet": b"0"})
    assert lake.ls(staging) == ["shard=000.parquet"]
    # Shard 1 is written by another worker process after this process listed the folder.
    bucket.blob(f"nightfeed/{staging}/shard=001.parquet").upload_from_string(b"1")

    assert lake.ls(staging) == ["shard=000.parquet", "shard=001.parquet"]
    lake.publish(DATASET, staging, ["shard=000.parquet", "shard=001.parquet"])
    assert lake.read_bytes(lake.manifest_files(DATASET)[1]) == b"1"


def test_one_of_two_writers_racing_for_a_night_lease_wins(lake: Lake) -> None:
    import threading

    from pipelines.core import night

    ds = dt.date(2026, 11, 22)
    barrier = threading.Barrier(4)
    outcomes: dict[str, bool] = {}

    def take(holder: str) -> None:
        barrier.wait()
        try:
            night.hold(lake, ds, holder, 60)
            outcomes[holder] = True
        except night.NightBusyError:
            outcomes[holder] = False

    threads = [threading.Thread(target=take, args=(f"DAG run n/run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 4 and sum(outcomes.values()) == 1, outcomes
    winner = next(holder for holder, won in outcomes.items() if won)
    night.close(lake, ds, winner, 60)
    assert night.read_night(lake, ds) is not None
    night.hold(lake, ds, "DAG run n/next", 60)  # released by close
