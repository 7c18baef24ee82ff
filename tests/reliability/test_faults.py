"""Reliability cases 10 and 11 (issue 13): one writer per night, a consistent night for readers, and a
wait on the warehouse lock that says so.

(Case 8, a dry run writes nothing readers see, runs a whole night: tests/pipelines/serving/test_shards.py
``test_case_08_a_dry_run_writes_nothing_that_readers_see``. Case 11's thin data and missing features:
tests/pipelines/evaluation/test_selection.py.)
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.core import jobs, night
from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.warehouse.duckdb import DuckDBWarehouse
from pipelines.jobs import run

DS = dt.date(2026, 11, 22)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def _publish(lake: Lake, name: str, run_id: str, data: bytes) -> str:
    dataset = LakePaths.night_datasets(DS)[name]
    staging = lake.begin_publish(dataset, run_id)
    lake.write_bytes(f"{staging}/part.txt", data)
    lake.publish(dataset, staging, ["part.txt"])
    return dataset


def test_case_10_a_second_writer_fails_fast_naming_the_holder(lake: Lake) -> None:
    first = night.hold(lake, DS, "DAG run nightfeed_nightly/scheduled__2026-11-22", 60)
    assert night.hold(lake, DS, first["holder"], 60) == first  # the holder's own tasks go on
    with pytest.raises(night.NightBusyError, match="being written by DAG run nightfeed_nightly/scheduled"):
        night.hold(lake, DS, "DAG run nightfeed_nightly/manual__2026-11-30", 60)
    assert issubclass(night.NightBusyError, PermanentError)  # fails at once, no retries
    # Another night is free.
    night.hold(lake, DS + dt.timedelta(days=1), "DAG run nightfeed_nightly/manual__2026-11-30", 60)


def test_case_10_a_dead_holders_lease_expires_and_is_taken_over(lake: Lake) -> None:
    expired = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    dead = {"ds": DS.isoformat(), "holder": "process dead:1", "taken_at": expired, "expires_at": expired}
    lake.write_pointer(LakePaths.night_lease(DS), dead, if_generation_match=0)
    taken = night.hold(lake, DS, "process alive:2", 60)
    assert taken["holder"] == "process alive:2"
    assert lake.read_pointer(LakePaths.night_lease(DS)).content == taken


def test_case_10_of_writers_racing_for_a_night_exactly_one_wins(lake: Lake) -> None:
    barrier = threading.Barrier(8)
    outcomes: dict[str, str] = {}

    def take(holder: str) -> None:
        barrier.wait()
        try:
            night.hold(lake, DS, holder, 60)
            outcomes[holder] = "won"
        except night.NightBusyError:
            outcomes[holder] = "refused"

    threads = [threading.Thread(target=take, args=(f"process racer:{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [holder for holder, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 8 and len(winners) == 1, outcomes
    assert lake.read_pointer(LakePaths.night_lease(DS)).content["holder"] == winners[0]


def test_case_10_a_job_of_another_run_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path / "data"))
    lake = Lake(str(tmp_path / "data" / "lake"))
    night.hold(lake, DS, "DAG run nightfeed_nightly/scheduled__2026-11-22", 60)
    with pytest.raises(night.NightBusyError, match="scheduled__2026-11-22"):
        run(jobs.EXPORT_INPUTS, DS, holder="DAG run nightfeed_nightly/manual__2026-11-30")
    # The command line is another writer too: one line, exit 2, the holder named.
    assert main(["nightly", "--ds", DS.isoformat()]) == 2
    assert "being written by DAG run nightfeed_nightly/scheduled__2026-11-22" in capsys.readouterr().err
    assert not lake.is_published(LakePaths.inputs(DS))
    assert lake.read_pointer(LakePaths.night_lease(DS)).content["holder"].endswith("scheduled__2026-11-22")


def test_case_10_a_command_releases_its_lease_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path / "data"))
    lake = Lake(str(tmp_path / "data" / "lake"))
    assert main(["nightly", "--ds", DS.isoformat()]) == 2  # no features: fails after taking the lease
    lease = lake.read_pointer(LakePaths.night_lease(DS)).content
    assert lease is not None and lease["holder"] == night.process_holder()
    assert dt.datetime.fromisoformat(lease["expires_at"]) <= dt.datetime.now(dt.UTC)
    night.hold(lake, DS, "DAG run nightfeed_nightly/manual__2026-11-30", 60)  # free for the next run


def test_case_10_readers_see_the_last_closed_night_while_a_rerun_writes(lake: Lake) -> None:
    holder = "DAG run nightfeed_nightly/scheduled__2026-11-22"
    night.hold(lake, DS, holder, 60)
    _publish(lake, "inputs", "20261122T010000-aaaaaaaa", b"inputs 1")
    _publish(lake, "candidates", "20261122T010500-aaaaaaaa", b"lists 1")
    closed = night.close(lake, DS, holder, 60)
    assert closed["runs"] == {"inputs": "20261122T010000-aaaaaaaa", "candidates": "20261122T010500-aaaaaaaa"}

    # A rerun publishes new inputs and dies before its candidates: the night manifest still names the
    # first night's runs, and their files are still there (the lake keeps what a night manifest names).
    rerun = "DAG run nightfeed_nightly/manual__2026-11-30"
    night.hold(lake, DS, rerun, 60)
    inputs = _publish(lake, "inputs", "20261130T090000-bbbbbbbb", b"inputs 2")
    seen = night.read_night(lake, DS)
    assert seen is not None and seen["runs"] == closed["runs"]
    assert lake.read_bytes(f"{inputs}/run=20261122T010000-aaaaaaaa/part.txt") == b"inputs 1"

    # Once the rerun closes its night, readers move to its runs and the superseded ones go.
    night.close(lake, DS, rerun, 60)
    assert night.read_night(lake, DS)["runs"]["inputs"] == "20261130T090000-bbbbbbbb"
    assert [name for name in lake.ls(inputs) if name.startswith("run=")] == ["run=20261130T090000-bbbbbbbb"]
    # The lease is released: the next run takes the night at once.
    night.hold(lake, DS, "DAG run nightfeed_nightly/manual__2026-12-01", 60)


def test_case_11_a_wait_on_the_warehouse_lock_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.INFO), pytest.raises(Exception, match=r"[Ll]ock"):
            DuckDBWarehouse(path, lock_timeout_s=2.0)
    finally:
        holder.kill()
        holder.wait()
    waits = [r.getMessage() for r in caplog.records if "waiting for the warehouse" in r.getMessage()]
    assert waits and str(path) in waits[0]
