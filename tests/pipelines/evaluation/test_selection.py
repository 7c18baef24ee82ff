"""The selection on the tiny world: choices are made on validation nights only, a stage that makes the lists
worse is left out, and the test night compares the candidate with every family's best."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.settings import Settings
from pipelines.core.warehouse import DuckDBWarehouse
from pipelines.evaluation.nights import NotEnoughHistory
from pipelines.evaluation.selection import Selection, select_system, selection_facts
from pipelines.serving.inputs import MissingFeaturesError, query_inputs
from tests.pipelines.evaluation.conftest import DS

pytestmark = pytest.mark.slow

# An age limit of 0.01 days (15 minutes) leaves almost nothing to list: a stage that makes lists worse.
HARMFUL_AGE = 0.01


@pytest.fixture(scope="module")
def selected(tiny_world: Settings) -> tuple[Selection, dict[str, Any]]:
    settings = tiny_world.with_overrides(
        {"selection": {"max_item_age_choices": [None, HARMFUL_AGE], "rankers": ["none", "impressions"]}}
    )
    with DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse:
        selection = select_system(warehouse, Lake(settings.lake_url), DS, settings, champion=None)
    return selection, selection_facts(selection, seed=settings.selection.seed)


def test_choices_are_made_on_validation_nights_only(selected) -> None:
    selection, facts = selected
    plan = selection.plan
    assert plan.test == DS - dt.timedelta(days=1) and plan.window_days == 2
    assert list(plan.validation) == [DS - dt.timedelta(days=5), DS - dt.timedelta(days=3)]
    validation = {n.isoformat() for n in plan.validation}
    assert facts["trials"] and all(set(t["nights"]) <= validation for t in facts["trials"])
    # Every system of the test night was built from models trained on the days before that night.
    served_day = (plan.test - dt.timedelta(days=1)).isoformat()
    for candidate in selection.candidates.values():
        system = candidate.system
        for version in (system.two_tower_version, system.ranker_version, system.als_version):
            assert version is None or version.startswith(f"{served_day}-"), (candidate.name, version)


def test_a_stage_that_makes_the_lists_worse_is_left_out(selected) -> None:
    selection, facts = selected
    metric = "recall_at_50"  # the selection metric
    age_trials = [t for t in facts["trials"] if t["step"].endswith(": age limit")]
    assert len(age_trials) == 4, "one age trial per retriever family"
    for trial in age_trials:
        harmful = [name for name in trial["options"] if f"age<={HARMFUL_AGE:g}d" in name]
        assert len(harmful) == 1 and trial["chosen"] not in harmful
        assert trial["options"][harmful[0]][metric] < trial["options"][trial["chosen"]][metric]
    # A stage replaces the option without it only when better beyond noise on the validation users.
    stage_trials = [t for t in facts["trials"] if "incumbent" in t]
    assert stage_trials
    for trial in stage_trials:
        gain = trial["gain_over_incumbent"]
        assert trial["chosen"] == (gain["option"] if gain["low"] > 0 else trial["incumbent"]), trial
    assert selection.chosen.max_item_age_days is None
    assert all(c.system.max_item_age_days is None for c in selection.candidates.values())


def test_the_test_night_holds_the_candidate_every_family_and_the_stages(selected) -> None:
    selection, facts = selected
    roles = {name: row["role"] for name, row in facts["test"].items()}
    assert roles[selection.chosen.name] == "candidate"
    families = {row["family"] for row in facts["test"].values()}
    assert families == {"two_tower", "most_popular", "item_knn", "als"}
    if selection.chosen.ranker != "none":
        assert "stage" in roles.values(), "the candidate without its ranker is replayed too"
    decision = facts["decision"]
    assert decision["promoted"] and decision["served"] in facts["test"]
    assert facts["differences_from_served"].keys() == facts["test"].keys() - {decision["served"]}
    # The best two-tower system against every baseline, whatever is served.
    baselines = {n for n, role in roles.items() if role == "baseline"}
    assert facts["model"] in facts["test"] and set(facts["model_differences"]) == baselines
    # The popularity prior is chosen for the two-tower on the validation nights, and served as chosen.
    (prior,) = [t for t in facts["trials"] if t["step"] == "two_tower: popularity prior"]
    assert len(prior["options"]) == 2 and set(prior["nights"]) == {
        n.isoformat() for n in selection.plan.validation
    }
    # A blend with each other family's best retriever is tried after the prior; a blended model is also
    # replayed on its own, against every baseline.
    (blend,) = [t for t in facts["trials"] if t["step"] == "two_tower: blend"]
    assert len(blend["options"]) == 1 + 3 and prior["chosen"] in blend["options"]
    model = selection.candidates[facts["model"]]
    if model.system.blend_retriever is not None:
        alone = selection.candidates[facts["model_alone"]]
        assert alone.system.blend_retriever is None and alone.recipe["ranker"] == model.recipe["ranker"]
        assert alone.system.two_tower_version == model.system.two_tower_version
        assert set(facts["model_alone_differences"]) == baselines
    else:
        assert facts["model_alone"] is None
    assert model.system.popularity_prior == model.recipe["popularity_prior"]
    assert (f"popularity prior {model.recipe['popularity_prior']:g}" in prior["chosen"]) == bool(
        model.recipe["popularity_prior"]
    )


def test_case_11_data_too_thin_for_any_candidate_is_a_permanent_error(tiny_world: Settings) -> None:
    settings = tiny_world.with_overrides(
        {"selection": {"retrievers": ["two_tower"], "min_train_examples": 10**9}}
    )
    with (
        DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse,
        pytest.raises(NotEnoughHistory, match="min_train_examples=1000000000"),
    ):
        select_system(warehouse, Lake(settings.lake_url), DS, settings, champion=None)
    assert issubclass(NotEnoughHistory, PermanentError)


def test_case_11_nights_before_the_features_are_named(tiny_world: Settings) -> None:
    with (
        DuckDBWarehouse(tiny_world.duckdb_file, read_only=True) as warehouse,
        pytest.raises(MissingFeaturesError, match=r"features of that day are not built") as raised,
    ):
        query_inputs(warehouse, DS + dt.timedelta(days=1), tiny_world)
    assert "python -m pipelines features --ds 2026-11-23" in str(raised.value.hint)


def test_the_window_fits_the_days_whose_features_are_built(tiny_world: Settings, tmp_path) -> None:
    import shutil

    from pipelines.evaluation.nights import choose_window

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(tiny_world.duckdb_file, copy)

    def window(choices: list[int]) -> int:
        config = tiny_world.selection.model_copy(
            update={"window_days": None, "window_choices": choices, "validation_nights": 2}
        )
        return choose_window(warehouse, DS, config, seen_horizon_days=0)

    with DuckDBWarehouse(copy) as warehouse:
        assert window([4]) == 4  # every feature day built: nights from DS - 11 can be served
        # Features from DS - 8 only: the 4-day window's first night could not be served; 2 days fits.
        for table in ("user_features", "item_features"):
            warehouse.con.execute(f"delete from {table} where ds < date '{DS - dt.timedelta(days=8)}'")
        with pytest.raises(NotEnoughHistory, match="build features for more days"):
            window([4])
        assert window([2, 4]) == 2


def test_a_choice_that_cannot_be_built_on_the_test_night_gives_way_to_the_next_best(
    tiny_world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The validation nights' choice cannot be built on the test night's data (too few examples there, as
    # on a log whose last weeks are sparse): the best of the other families is the candidate.
    from pipelines.evaluation import selection as selection_module
    from pipelines.evaluation.nights import plan_nights
    from pipelines.evaluation.recipes import Kitchen

    settings = tiny_world
    test_night = plan_nights(DS, settings.selection.window_days, settings.selection.validation_nights).test
    refused: list[str] = []
    choose, build = selection_module._Protocol.choose, Kitchen.system

    def first_choice(self: Any, step: str, options: list[Any], incumbent: Any = None) -> Any:
        chosen = choose(self, step, options, incumbent)
        if step == "system" and chosen is not None:
            refused.append(chosen.family)
        return chosen

    def system(self: Kitchen, night: dt.date, recipe: Any) -> Any:
        if night == test_night and recipe.family in refused:
            return None
        return build(self, night, recipe)

    monkeypatch.setattr(selection_module._Protocol, "choose", first_choice)
    monkeypatch.setattr(Kitchen, "system", system)
    with DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse:
        selection = select_system(warehouse, Lake(settings.lake_url), DS, settings, champion=None)
    assert refused and selection.chosen.family != refused[0]
    assert any(t["step"] == "system (buildable on the test night)" for t in selection.trials)
    assert selection.decision.served in selection.test
    assert all(c.family != refused[0] for c in selection.candidates.values())


def test_nights_before_the_validation_nights_train_the_retrieval_ranker_where_the_data_reaches(
    tiny_world: Settings,
) -> None:
    # Of 30 ranker nights, 2 days apart, before the first validation night (DS - 5), the ones whose served
    # day has features are replayed; the tiny world's history does not reach back 65 days.
    from pipelines.evaluation.selection import _Protocol

    def protocol(selection: dict[str, Any]) -> Any:
        settings = tiny_world.with_overrides({"selection": selection})
        with DuckDBWarehouse(settings.duckdb_file, read_only=True) as warehouse:
            return _Protocol(warehouse, Lake(settings.lake_url), DS, settings)

    with DuckDBWarehouse(tiny_world.duckdb_file, read_only=True) as warehouse:
        first_built = warehouse.partitions("user_features")[0]
    made = protocol({"ranker_nights": 30})
    wanted = [DS - dt.timedelta(days=5 + 2 * i) for i in range(30, 0, -1)]
    reached = [n for n in wanted if n - dt.timedelta(days=1) >= first_built]
    assert 0 < len(reached) < len(wanted), "some nights reach the data, some do not"
    assert list(made.plan.ranker) == reached
    assert made.kitchen.nights == [*reached, *made.plan.validation, made.plan.test]
    assert made.plan.to_json()["ranker"] == [n.isoformat() for n in reached]
    assert all(night in made.replays for night in reached)
    # Without a retrieval ranker to train, no such night is replayed.
    assert protocol({"ranker_nights": 30, "rankers": ["none", "impressions"]}).plan.ranker == ()
