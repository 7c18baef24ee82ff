"""Model versions and the champion pointer, on a local lake."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.core.lake import Lake, PointerVersion, PublishConflict
from pipelines.core.paths import LakePaths
from pipelines.training import registry

KIND = "two_tower"


def _export(lake: Lake, minute: int) -> str:
    """A finished export: only config.json matters to the registry."""
    version = registry.new_version(
        dt.date(2026, 11, 22), {"m": minute}, now=dt.datetime(2026, 11, 23, 2, minute, tzinfo=dt.UTC)
    )
    lake.write_json(f"{LakePaths.model_dir(KIND, version)}/config.json", {"version": version})
    return version


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_first_promotion_needs_no_champion(lake):
    version = _export(lake, 1)
    registry.promote(lake, KIND, {"version": version, "label": "first"}, expected_champion=None)
    champion = registry.current_champion(lake, KIND)
    assert champion["version"] == version and champion["previous_version"] is None
    assert champion["label"] == "first" and champion["kind"] == KIND
    assert registry.champion_version(lake, KIND) == version


def test_promotion_replaces_the_champion_it_was_judged_against(lake):
    first, second = _export(lake, 1), _export(lake, 2)
    registry.promote(lake, KIND, {"version": first}, expected_champion=None)
    registry.promote(lake, KIND, {"version": second}, expected_champion=first)
    champion = registry.current_champion(lake, KIND)
    assert champion["version"] == second and champion["previous_version"] == first


def test_a_champion_that_changed_since_the_judgement_is_a_conflict(lake):
    first, second, third = _export(lake, 1), _export(lake, 2), _export(lake, 3)
    registry.promote(lake, KIND, {"version": first}, expected_champion=None)
    registry.promote(lake, KIND, {"version": second}, expected_champion=first)
    before = lake.read_pointer(LakePaths.champion(KIND))
    # judged against `first`, but `second` is the champion by now
    with pytest.raises(PublishConflict, match="not '"):
        registry.promote(lake, KIND, {"version": third}, expected_champion=first)
    assert lake.read_pointer(LakePaths.champion(KIND)) == before
    # a first promotion is refused once there is a champion
    with pytest.raises(PublishConflict):
        registry.promote(lake, KIND, {"version": third}, expected_champion=None)


class RacingLake(Lake):
    """A lake where another run promotes its model right after we read the pointer."""

    rival: str = ""

    def read_pointer(self, rel: str) -> PointerVersion:
        pointer = super().read_pointer(rel)
        if self.rival:
            rival, self.rival = self.rival, ""
            self.write_pointer(rel, {"version": rival}, if_generation_match=None)
        return pointer


def test_concurrent_promotion_is_detected(tmp_path):
    lake = RacingLake(str(tmp_path / "lake"))
    mine, theirs = _export(lake, 1), _export(lake, 2)
    lake.rival = theirs
    with pytest.raises(PublishConflict):
        registry.promote(lake, KIND, {"version": mine}, expected_champion=None)
    assert registry.current_champion(lake, KIND)["version"] == theirs


def test_check_version_names_a_malformed_version():
    assert registry.check_version(registry.new_version(dt.date(2026, 11, 22), {})).startswith("2026-11-22-")
    with pytest.raises(ValueError, match="model version must look like"):
        registry.check_version("latest")


def test_versions_sort_by_date_then_time_and_name_the_config(lake):
    early = registry.new_version(
        dt.date(2026, 11, 21), {"a": 1}, now=dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    )
    late = registry.new_version(dt.date(2026, 11, 22), {"a": 1}, now=dt.datetime(2026, 11, 22, tzinfo=dt.UTC))
    same_time_other_config = registry.new_version(
        dt.date(2026, 11, 22), {"a": 2}, now=dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    )
    assert sorted([late, early]) == [early, late]
    assert late[:-8] == same_time_other_config[:-8] and late != same_time_other_config
    assert registry.new_version(dt.date(2026, 11, 22), {}) != registry.new_version(dt.date(2026, 11, 22), {})
    first, second = _export(lake, 2), _export(lake, 1)
    lake.write_json(
        f"{LakePaths.model_dir(KIND, registry.new_version(dt.date(2026, 11, 22), {}))}/user_tower.txt", {}
    )
    # the unfinished export (no config.json) is not listed
    assert registry.list_versions(lake, KIND) == [second, first]


# -- the promotion history ---------------------------------------------------------------------------------
def history_files(lake: Lake) -> list[str]:
    return [name for name in lake.ls(LakePaths.promotions(KIND)) if name.endswith(".json")]


def test_every_promotion_is_recorded_once_in_promotion_order(lake):
    first, second = _export(lake, 1), _export(lake, 2)
    registry.promote(lake, KIND, {"version": first, "label": "a"}, expected_champion=None)
    registry.promote(lake, KIND, {"version": second, "label": "b"}, expected_champion=first)
    history = registry.promotion_history(lake, KIND)
    assert [(r["version"], r["previous_version"], r["label"]) for r in history] == [
        (first, None, "a"),
        (second, first, "b"),
    ]
    assert history[-1] == registry.current_champion(lake, KIND)
    files = history_files(lake)
    assert len(files) == 2 and [f.split("Z-", 1)[1] for f in files] == [f"{first}.json", f"{second}.json"]
    # A refused promotion leaves no trace in the history.
    with pytest.raises(PublishConflict):
        registry.promote(lake, KIND, {"version": _export(lake, 3)}, expected_champion=first)
    assert history_files(lake) == files


def test_a_champion_from_before_the_history_is_a_history_of_one_and_kept_when_replaced(lake):
    old, new = _export(lake, 1), _export(lake, 2)
    legacy = {"version": old, "kind": KIND, "promoted_at": "2026-11-23T02:01:00+00:00"}
    lake.write_pointer(LakePaths.champion(KIND), legacy, if_generation_match=0)
    assert registry.promotion_history(lake, KIND) == [legacy] and history_files(lake) == []
    registry.promote(lake, KIND, {"version": new}, expected_champion=old)
    assert [r["version"] for r in registry.promotion_history(lake, KIND)] == [old, new]
    assert len(history_files(lake)) == 2


def test_trained_through_is_the_run_date_a_version_starts_with():
    version = registry.new_version(dt.date(2026, 11, 20), {}, now=dt.datetime(2026, 11, 29, tzinfo=dt.UTC))
    assert registry.trained_through(version) == dt.date(2026, 11, 20)
    with pytest.raises(ValueError, match="model version must look like"):
        registry.trained_through("2026-11-20")
