"""The blessing gate and the champion pointer, on a local lake."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.core.lake import Lake, PointerVersion, PublishConflict
from pipelines.core.paths import LakePaths
from pipelines.core.settings import BlessingConfig
from pipelines.training import registry

KIND = "two_tower"
GATE = BlessingConfig(metric="recall_at_50", tolerance=0.01, floor=0.05)


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


def test_first_model_needs_only_the_floor(lake):
    version = _export(lake, 1)
    decision = registry.promote_if_blessed(lake, KIND, version, {"recall_at_50": 0.06}, None, GATE)
    assert decision.promoted and "first" in decision.reason
    champion = registry.current_champion(lake, KIND)
    assert champion["version"] == version and champion["value"] == 0.06
    assert lake.read_json(f"{LakePaths.model_dir(KIND, version)}/decision.json")["promoted"] is True


def test_first_model_below_the_floor_is_rejected(lake):
    version = _export(lake, 1)
    decision = registry.promote_if_blessed(lake, KIND, version, {"recall_at_50": 0.04}, None, GATE)
    # 0.04 < floor 0.05
    assert not decision.promoted and "below the floor" in decision.reason
    assert registry.current_champion(lake, KIND) is None


def test_challenger_within_tolerance_is_promoted(lake):
    first, second = _export(lake, 1), _export(lake, 2)
    registry.promote_if_blessed(lake, KIND, first, {"recall_at_50": 0.30}, None, GATE)
    # champion re-evaluated on this hold-out: 0.305; challenger 0.296 >= 0.305 - 0.01 = 0.295
    decision = registry.promote_if_blessed(
        lake, KIND, second, {"recall_at_50": 0.296}, {"recall_at_50": 0.305}, GATE, champion_version=first
    )
    assert decision.promoted
    assert decision.champion_version == first and decision.champion_value == 0.305
    champion = registry.current_champion(lake, KIND)
    assert champion["version"] == second and champion["previous_version"] == first


def test_worse_challenger_leaves_the_champion_untouched(lake):
    first, second = _export(lake, 1), _export(lake, 2)
    registry.promote_if_blessed(lake, KIND, first, {"recall_at_50": 0.30}, None, GATE)
    before = lake.read_pointer(LakePaths.champion(KIND))
    # 0.28 < 0.30 - 0.01 = 0.29
    decision = registry.promote_if_blessed(
        lake, KIND, second, {"recall_at_50": 0.28}, {"recall_at_50": 0.30}, GATE
    )
    assert not decision.promoted and "trails champion" in decision.reason
    assert lake.read_pointer(LakePaths.champion(KIND)) == before


def test_better_than_champion_but_below_floor_is_rejected(lake):
    first, second = _export(lake, 1), _export(lake, 2)
    registry.promote_if_blessed(lake, KIND, first, {"recall_at_50": 0.06}, None, GATE)
    # the champion fell to 0.03 on this hold-out; 0.045 beats it but is below the floor 0.05
    decision = registry.promote_if_blessed(
        lake, KIND, second, {"recall_at_50": 0.045}, {"recall_at_50": 0.03}, GATE
    )
    assert not decision.promoted and "floor" in decision.reason
    assert registry.current_champion(lake, KIND)["version"] == first


def test_champion_metrics_are_required_once_there_is_a_champion(lake):
    first, second = _export(lake, 1), _export(lake, 2)
    registry.promote_if_blessed(lake, KIND, first, {"recall_at_50": 0.3}, None, GATE)
    with pytest.raises(ValueError, match="re-evaluate it on this hold-out"):
        registry.promote_if_blessed(lake, KIND, second, {"recall_at_50": 0.9}, None, GATE)


def test_stale_champion_metrics_are_refused(lake):
    first, second, third = _export(lake, 1), _export(lake, 2), _export(lake, 3)
    registry.promote_if_blessed(lake, KIND, first, {"recall_at_50": 0.3}, None, GATE)
    registry.promote_if_blessed(lake, KIND, second, {"recall_at_50": 0.4}, {"recall_at_50": 0.3}, GATE)
    # metrics computed for `first`, but `second` is the champion by now
    with pytest.raises(PublishConflict, match="re-evaluate"):
        registry.promote_if_blessed(
            lake, KIND, third, {"recall_at_50": 0.5}, {"recall_at_50": 0.3}, GATE, champion_version=first
        )


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
        registry.promote_if_blessed(lake, KIND, mine, {"recall_at_50": 0.3}, None, GATE)
    assert registry.current_champion(lake, KIND)["version"] == theirs
    assert not lake.exists(f"{LakePaths.model_dir(KIND, mine)}/decision.json")


def test_gate_input_errors(lake):
    version = _export(lake, 1)
    with pytest.raises(ValueError, match="no metric 'recall_at_50'"):
        registry.promote_if_blessed(lake, KIND, version, {"recall_at_10": 0.3}, None, GATE)
    unexported = registry.new_version(dt.date(2026, 11, 22), {})
    with pytest.raises(ValueError, match="no complete export"):
        registry.promote_if_blessed(lake, KIND, unexported, {"recall_at_50": 0.3}, None, GATE)
    with pytest.raises(ValueError, match="model version must look like"):
        registry.promote_if_blessed(lake, KIND, "latest", {"recall_at_50": 0.3}, None, GATE)


def test_nan_metric_is_rejected(lake):
    version = _export(lake, 1)
    decision = registry.promote_if_blessed(lake, KIND, version, {"recall_at_50": float("nan")}, None, GATE)
    assert not decision.promoted and "not a number" in decision.reason


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
