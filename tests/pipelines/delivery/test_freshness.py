"""The freshness check: the newest PUBLISHED candidates and digests, their age in days before ds, and a
loud failure naming what is stale."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.settings import FreshnessConfig
from pipelines.delivery.freshness import StaleOutputs, check_freshness, newest_published_ds

DS = dt.date(2026, 11, 22)


def publish(lake: Lake, name: str, day: dt.date) -> None:
    dataset = LakePaths.dataset(name, day)
    staging = lake.begin_publish(dataset)
    lake.write_bytes(f"{staging}/part.txt", b"x")
    lake.publish(dataset, staging, ["part.txt"])


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    publish(lake, "candidates", dt.date(2026, 11, 20))
    publish(lake, "candidates", dt.date(2026, 11, 21))
    publish(lake, "digests", dt.date(2026, 11, 19))
    # A newer night that never published: a staging folder without a manifest.
    lake.begin_publish(LakePaths.candidates(dt.date(2026, 11, 22)))
    return lake


def test_the_newest_published_day_skips_unpublished_ones(lake: Lake) -> None:
    assert newest_published_ds(lake, "candidates") == dt.date(2026, 11, 21)
    assert newest_published_ds(lake, "digests") == dt.date(2026, 11, 19)
    assert newest_published_ds(lake, "reports") is None


def test_outputs_within_the_allowed_age_pass_with_their_ages(lake: Lake) -> None:
    # candidates of 11-21 are 1 day before 11-22, digests of 11-19 are 3 days before it.
    result = check_freshness(lake, DS, FreshnessConfig(max_age_days=3))
    assert result["age_days"] == {"candidates": 1, "digests": 3}
    assert result["newest"] == {"candidates": "2026-11-21", "digests": "2026-11-19"}


def test_stale_digests_fail_and_say_which_and_how_old(lake: Lake) -> None:
    with pytest.raises(StaleOutputs) as caught:
        check_freshness(lake, DS, FreshnessConfig(max_age_days=1))
    message = str(caught.value)
    assert "the newest published digests are for 2026-11-19, 3 days before 2026-11-22" in message
    assert "max_age_days is 1" in message
    assert "candidates" not in message


def test_outputs_never_published_fail_naming_where_they_were_looked_for(tmp_path: Path) -> None:
    empty = Lake(str(tmp_path / "empty"))
    with pytest.raises(StaleOutputs, match=r"no candidates are published in .*empty/candidates"):
        check_freshness(empty, DS, FreshnessConfig())
