"""The system a night serves: the latest promotion trained on data up to the night, from the registry's
promotion history, or the current champion when the run asks; none before the first promotion."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import SYSTEM, LakePaths
from pipelines.serving.system import NO_CHAMPION, NoChampionError, ServedSystem, served_system
from pipelines.training import registry


def popular(window: int) -> ServedSystem:
    """A system without models, told apart by its window."""
    return ServedSystem("most_popular", None, diversify=False, popularity_window_days=window)


def promote(lake: Lake, trained_through: str, window: int) -> str:
    """Promote ``popular(window)`` trained on data up to ``trained_through``; return its version."""
    system = popular(window)
    version = registry.new_version(dt.date.fromisoformat(trained_through), system.to_json())
    registry.promote(
        lake,
        SYSTEM,
        {"version": version, "system": system.to_json()},
        expected_champion=registry.champion_version(lake, SYSTEM),
    )
    return version


def night(day: str) -> dt.date:
    return dt.date.fromisoformat(day)


def test_a_night_serves_the_latest_promotion_trained_on_data_up_to_it(lake: Lake) -> None:
    nov10, nov20 = promote(lake, "2026-11-10", 1), promote(lake, "2026-11-20", 2)
    for day, version, window in (
        ("2026-11-10", nov10, 1),
        ("2026-11-19", nov10, 1),
        ("2026-11-20", nov20, 2),
        ("2026-11-30", nov20, 2),
    ):
        chosen = served_system(lake, night(day))
        assert (chosen.version, chosen.system, chosen.rule) == (version, popular(window), "as_of"), day
        rule = f"the latest promotion trained on data up to {day}"
        assert chosen.reason == f"in force on {day} ({rule}): {version}"
    # A system trained on older data but promoted later serves every night from its data on.
    nov15 = promote(lake, "2026-11-15", 3)
    assert [served_system(lake, night(d)).version for d in ("2026-11-12", "2026-11-17", "2026-11-25")] == [
        nov10,
        nov15,
        nov15,
    ]


def test_the_run_may_ask_for_the_current_champion(lake: Lake) -> None:
    promote(lake, "2026-11-10", 1)
    current = promote(lake, "2026-11-20", 2)
    chosen = served_system(lake, night("2026-11-12"), use_current=True)
    assert (chosen.version, chosen.system, chosen.rule) == (current, popular(2), "current")
    assert chosen.to_json() == {
        "version": current,
        "trained_through": "2026-11-20",
        "rule": "current",
        "reason": f"the current champion, as the run asked (use_current_system): {current}",
    }


def test_a_night_before_the_first_promotion_fails_with_what_to_do(lake: Lake) -> None:
    with pytest.raises(NoChampionError, match=NO_CHAMPION.replace("(", r"\(").replace(")", r"\)")):
        served_system(lake, night("2026-11-22"))
    promote(lake, "2026-11-10", 1)
    with pytest.raises(NoChampionError) as failure:
        served_system(lake, night("2026-11-09"))
    assert str(failure.value) == (
        "no system was in force on 2026-11-09: the earliest promoted system was trained on data up to "
        "2026-11-10; train for 2026-11-09 or earlier, or set use_current_system to serve the current one"
    )


def test_a_champion_without_history_serves_every_night_from_its_data_on(lake: Lake) -> None:
    system = popular(7)
    version = registry.new_version(night("2026-11-10"), system.to_json())
    pointer = {"version": version, "system": system.to_json(), "promoted_at": "2026-11-11T02:00:00+00:00"}
    lake.write_pointer(LakePaths.champion(SYSTEM), pointer, if_generation_match=0)
    assert served_system(lake, night("2026-11-25")).version == version
    with pytest.raises(NoChampionError, match="2026-11-10"):
        served_system(lake, night("2026-11-09"))
