"""Choose the system to serve: candidates replayed on validation nights, the winner checked on the test
night against the tuned baselines and the champion.

1. On each validation night every retriever candidate (:func:`~.recipes.retriever_recipes`) is trained on
   the data before the night and its lists are replayed as served; each family keeps its best. The
   two-tower's settings are searched one at a time (``selection.two_tower_search``), then the weight of
   a popularity prior on its retrieval scores (``selection.popularity_priors``, no retraining), then a
   blend of its retrieval with another family's best retriever (``selection.blend_weights``).
2. The list stages are chosen on the validation nights too, one at a time: a ranker for the two-tower
   (trained on logged impressions, or on the earlier nights' retrieved posts labelled by what users did
   next) and its retrieval depth, an age limit, then diversification and its relevance weight; a stage
   stays only if the lists get better.
3. The candidate is the family best that scores highest. On the test night, never looked at before, it is
   replayed with models trained on the data before that night next to every family's best and the
   champion, and the gate decides (:mod:`.gate`).

Choices compare recipes on the validation nights where all of them can be built, pooling the users of
those nights. A retrieval-trained ranker learns from every earlier night: the validation nights before
it, and the ``selection.ranker_nights`` nights (none by default) before the first validation night that
only train rankers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from pipelines.core.lake import Lake
from pipelines.core.model_settings import IMPRESSIONS_RANKER, NO_RANKER, RETRIEVAL_RANKER, TWO_TOWER_RETRIEVER
from pipelines.core.settings import Settings
from pipelines.core.warehouse import Warehouse
from pipelines.evaluation.gate import (
    BASELINE,
    CANDIDATE,
    CHAMPION,
    MODEL,
    STAGE,
    Candidate,
    GateDecision,
    decide,
)
from pipelines.evaluation.night_models import NightModels, Trained
from pipelines.evaluation.nights import NightPlan, NotEnoughHistory, choose_window, plan_nights
from pipelines.evaluation.recipes import Kitchen, Recipe, retriever_recipes
from pipelines.evaluation.replay import Replay, load_night
from pipelines.evaluation.scoring import ListScores, combine
from pipelines.serving.inputs import EmptyInputsError
from pipelines.serving.model_store import ModelStore
from pipelines.serving.system import ServedSystem

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Selection:
    """What a training run measured and decided; ``metric`` is what systems were chosen by, ``exports`` are
    the new models the served system needs."""

    metric: str
    plan: NightPlan
    nights: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    chosen: Recipe
    test: dict[str, ListScores]
    candidates: dict[str, Candidate]
    decision: GateDecision
    exports: list[Trained]
    seconds: dict[str, float]


class _Protocol:
    """One selection run: the nights, their replays, the kitchen and every score, computed once."""

    def __init__(self, warehouse: Warehouse, lake: Lake, ds: dt.date, settings: Settings) -> None:
        self.settings, self.config = settings, settings.selection
        window = choose_window(warehouse, ds, self.config, settings.candidates.seen_horizon_days or 0)
        ranker_nights = self.config.ranker_nights if RETRIEVAL_RANKER in self.config.rankers else 0
        self.plan = planned = plan_nights(ds, window, self.config.validation_nights, ranker_nights)
        self.nights = [*planned.validation, planned.test]
        self.store = ModelStore(lake, compiled_ranker=settings.ranker.compiled_scoring)
        self.models = NightModels(warehouse, settings, self.store)
        self.replays = {night: self._replay(warehouse, night) for night in self.nights}
        for night in planned.ranker:  # nights that only train rankers: skipped where the data ends
            try:
                self.replays[night] = self._replay(warehouse, night)
            except NotEnoughHistory as exc:
                log.info("no ranker training night %s: %s", night, exc)
        self.plan = dataclasses.replace(planned, ranker=tuple(n for n in planned.ranker if n in self.replays))
        self.kitchen = Kitchen(self.models, self.replays, [*self.plan.ranker, *self.nights])
        self._scores: dict[tuple[dt.date, Recipe], ListScores | None] = {}
        self.trials: list[dict[str, Any]] = []

    def _replay(self, warehouse: Warehouse, night: dt.date) -> Replay:
        plan = f"nights {[n.isoformat() for n in self.nights]} with a {self.plan.window_days}-day window"
        try:
            loaded = load_night(warehouse, night, self.plan.window_days, self.settings)
        except EmptyInputsError as exc:
            raise NotEnoughHistory(
                f"the selection replays the {plan}, but {exc}; load more history or lower "
                "selection.validation_nights or selection.window_days"
            ) from exc
        if len(loaded.eval_users) == 0:
            raise NotEnoughHistory(
                f"the selection replays the {plan}, but no user engaged after the night {night}; "
                "lower selection.min_eval_users or set a longer selection.window_days"
            )
        return Replay(loaded, self.settings, self.store)

    def score(self, night: dt.date, recipe: Recipe) -> ListScores | None:
        key = (night, recipe)
        if key not in self._scores:
            system = self.kitchen.system(night, recipe)
            self._scores[key] = None if system is None else self.replays[night].evaluate(system)
        return self._scores[key]

    def choose(self, step: str, options: list[Recipe], incumbent: Recipe | None = None) -> Recipe | None:
        """The option with the highest pooled validation metric, on the nights where all of the
        options that can be built on the last validation night can be built.

        With an ``incumbent`` (the option without a list stage), another option wins only when it is
        better beyond noise: the paired 95% interval of its difference to the incumbent, over the pooled
        validation users, lies above zero. A stage has to earn its place.
        """
        last = self.plan.validation[-1]
        options = [o for o in options if self.score(last, o) is not None]
        if not options:
            return None
        nights = [n for n in self.plan.validation if all(self.score(n, o) is not None for o in options)]
        pooled = {option: combine([self.score(n, option) for n in nights]) for option in options}
        values = {option: scores.means() for option, scores in pooled.items()}
        metric = self.config.metric
        best = max(options, key=lambda o: values[o][metric])
        trial: dict[str, Any] = {
            "step": step,
            "nights": [n.isoformat() for n in nights],
            "options": {o.name: values[o] for o in options},
        }
        if incumbent in pooled and best != incumbent:
            gain = pooled[best].difference(pooled[incumbent], seed=self.config.seed)[metric]
            trial["incumbent"] = incumbent.name
            trial["gain_over_incumbent"] = {"option": best.name, **gain.to_json()}
            if gain.low <= 0:
                best = incumbent
        trial["chosen"] = best.name
        self.trials.append(trial)
        log.info("%s: %s (%s %.4f)", step, best.name, self.config.metric, values[best][self.config.metric])
        return best


def _choose_popularity_prior(protocol: _Protocol, best: Recipe) -> Recipe:
    """``best`` (a two-tower recipe) with the weight of ``selection.popularity_priors`` that serves the best
    lists on the validation nights: the same models replayed with other retrieval scores, no retraining.
    The first weight is kept unless another is better beyond noise."""
    priors = [dataclasses.replace(best, popularity_prior=p) for p in protocol.config.popularity_priors]
    return protocol.choose(f"{best.family}: popularity prior", priors, incumbent=priors[0]) or best


def _choose_blend(protocol: _Protocol, best: Recipe, others: list[Recipe]) -> Recipe:
    """``best`` (a two-tower recipe) fused with the best retriever of another family at a weight of
    ``selection.blend_weights``, if one such blend serves better lists beyond noise on the validation
    nights; else ``best`` alone. The blended models are the ones already trained, nothing is retrained."""
    blends = [best.blended_with(other, w) for other in others for w in protocol.config.blend_weights]
    if not blends:
        return best
    return protocol.choose(f"{best.family}: blend", [best, *blends], incumbent=best) or best


def _ranker_options(sources: list[str], best: Recipe) -> list[Recipe]:
    """``best`` with each ranker of ``sources``; an impressions ranker learns from the two-tower's own
    retrieval scores, which a blend replaces, so a blend is offered the others only."""
    usable = [r for r in sources if not (best.blend_family is not None and r == IMPRESSIONS_RANKER)]
    return [dataclasses.replace(best, ranker=r) for r in usable]


def _test_candidates(
    protocol: _Protocol, finals: dict[str, Recipe], chosen: Recipe, champion: ServedSystem | None
) -> dict[str, Candidate]:
    test = protocol.plan.test
    candidates: dict[str, Candidate] = {}

    def add(recipe: Recipe, role: str) -> None:
        system = protocol.kitchen.system(test, recipe)
        if system is not None and recipe.name not in candidates:
            candidates[recipe.name] = Candidate(recipe.name, recipe.family, system, role, recipe.to_json())

    add(chosen, CANDIDATE)
    for family, recipe in finals.items():
        add(recipe, MODEL if family == TWO_TOWER_RETRIEVER else BASELINE)
    # The two-tower without its blend: what the blend adds, and the model on its own against the baselines.
    two_tower = finals.get(TWO_TOWER_RETRIEVER)
    if two_tower is not None and two_tower.blend_family is not None:
        add(two_tower.without_blend, STAGE if two_tower == chosen else MODEL)
    # What each stage of the candidate adds, measured on the test night too.
    if chosen.ranker != NO_RANKER:
        add(dataclasses.replace(chosen, ranker=NO_RANKER), STAGE)
    if chosen.diversify:
        add(dataclasses.replace(chosen, diversify=False), STAGE)
    if champion is not None:
        candidates[CHAMPION] = Candidate(CHAMPION, champion.retriever, champion, CHAMPION)
    return candidates


def select_system(
    warehouse: Warehouse, lake: Lake, ds: dt.date, settings: Settings, champion: ServedSystem | None
) -> Selection:
    """Run the selection protocol for the training run of ``ds`` (see the module docstring).

    Raises:
        pipelines.evaluation.nights.NotEnoughHistory: the data cannot hold the nights, a night has no user
            to evaluate, or no candidate could be built on the last validation night.
    """
    started = time.perf_counter()
    protocol = _Protocol(warehouse, lake, ds, settings)
    seconds = {"nights": time.perf_counter() - started}
    finals: dict[str, Recipe] = {}
    by_family: dict[str, list[Recipe]] = {}
    for recipe in retriever_recipes(settings):
        by_family.setdefault(recipe.family, []).append(recipe)
    config = protocol.config
    retrievers = {
        family: best
        for family, recipes in by_family.items()
        if (best := protocol.choose(f"{family}: retriever", recipes)) is not None
    }
    for family, best in retrievers.items():
        if family == TWO_TOWER_RETRIEVER:
            for name, values in config.two_tower_search.items():
                options = [best.with_two_tower_setting(settings, name, v) for v in values]
                best = protocol.choose(f"{family}: {name}", list(dict.fromkeys(options))) or best
            best = _choose_popularity_prior(protocol, best)
            best = _choose_blend(protocol, best, [r for f, r in retrievers.items() if f != family])
            rankers = _ranker_options(config.rankers, best)
            best = protocol.choose(f"{family}: ranker", rankers, incumbent=rankers[0]) or best
            if best.ranker != NO_RANKER:
                depths = [dataclasses.replace(best, retrieval_depth=d) for d in config.retrieval_depths]
                best = protocol.choose(f"{family}: retrieval depth", depths) or best
        ages = [dataclasses.replace(best, max_item_age_days=a) for a in config.max_item_age_choices]
        best = protocol.choose(f"{family}: age limit", ages, incumbent=ages[0]) or best
        diversified = (
            [dataclasses.replace(best, diversify=False)] if False in config.diversify_choices else []
        )
        if True in config.diversify_choices:
            diversified += [
                dataclasses.replace(best, diversify=True, mmr_lambda=x) for x in config.mmr_lambdas
            ]
        best = protocol.choose(f"{family}: diversification", diversified, incumbent=diversified[0]) or best
        finals[family] = best
    seconds["validation"] = time.perf_counter() - started - seconds["nights"]
    chosen = protocol.choose("system", list(finals.values()))
    if chosen is None:
        night = protocol.plan.validation[-1]
        raise NotEnoughHistory(
            f"no candidate system could be trained on the data before the night {night} "
            f"(a two-tower needs selection.min_train_examples={protocol.config.min_train_examples} examples, "
            "a baseline one engagement); load more history"
        )
    test_started = time.perf_counter()
    candidates = _test_candidates(protocol, finals, chosen, champion)
    if chosen.name not in candidates:
        # Built on the validation nights, not on the test night's data (too few examples there): the
        # best of the others that can be built on it is the candidate.
        buildable = [recipe for recipe in finals.values() if recipe.name in candidates]
        fallback = protocol.choose("system (buildable on the test night)", buildable) if buildable else None
        if fallback is None:
            raise NotEnoughHistory(
                f"no candidate system could be built on the data before the test night {protocol.plan.test}; "
                "load more history"
            )
        log.warning(
            "%s cannot be built on the data before the test night %s; the candidate is %s",
            chosen.name,
            protocol.plan.test,
            fallback.name,
        )
        chosen = fallback
        candidates = _test_candidates(protocol, finals, chosen, champion)
    replay = protocol.replays[protocol.plan.test]
    scores = {name: replay.evaluate(candidate.system) for name, candidate in candidates.items()}
    seconds["test"] = time.perf_counter() - test_started
    decision = decide(candidates, scores, chosen.name, protocol.config)
    exports = []
    if decision.promoted and decision.system is not None:
        wanted = {
            decision.system.two_tower_version,
            decision.system.ranker_version,
            decision.system.als_version,
        }
        exports = [t for t in protocol.models.trained.values() if t.version in wanted]
    seconds["total"] = time.perf_counter() - started
    return Selection(
        metric=protocol.config.metric,
        plan=protocol.plan,
        nights=[protocol.replays[n].night.summary() for n in protocol.nights],
        trials=protocol.trials,
        chosen=chosen,
        test=scores,
        candidates=candidates,
        decision=decision,
        exports=exports,
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


def _differences(selection: Selection, of: str, others: list[str], seed: int) -> dict[str, Any]:
    """Paired intervals of (``of`` - other) on the test night, for each of ``others``, JSON-ready."""
    return {
        name: {
            m: i.to_json() for m, i in selection.test[of].difference(selection.test[name], seed=seed).items()
        }
        for name in others
    }


def selection_facts(selection: Selection, seed: int = 0) -> dict[str, Any]:
    """Everything the run report shows of a selection, JSON-ready: the metric, the nights, every validation
    trial, the test night's table with bootstrap intervals, and paired differences: from the served system
    to every other, from the chosen candidate to each of its ``stage`` variants (what the stage adds), and
    from the best two-tower system (``model``, and ``model_alone``, that system without its blend, if it
    has one) to every baseline; and the decision."""
    test = {}
    for name, scores in selection.test.items():
        candidate = selection.candidates[name]
        test[name] = {
            "role": candidate.role,
            "family": candidate.family,
            "system": candidate.system.to_json(),
            "label": candidate.system.label,
            "summary": scores.summary(),
            "intervals": {m: i.to_json() for m, i in scores.intervals(seed=seed).items()},
        }
    served = selection.decision.served
    roles = {name: selection.candidates[name].role for name in selection.test}
    # The two-tower path against every baseline, whatever is served: is the model worth its cost here?
    model = next(
        (
            n
            for n, c in selection.candidates.items()
            if c.family == TWO_TOWER_RETRIEVER and c.role in (CANDIDATE, MODEL) and n in selection.test
        ),
        None,
    )
    baselines = [n for n, role in roles.items() if role == BASELINE]
    # A blended model also on its own: the two-tower's retrieval without the other family's lists.
    alone = None
    if model is not None and selection.candidates[model].system.blend_retriever is not None:
        recipe = selection.candidates[model].recipe
        unblended = Recipe.from_json(recipe).without_blend.name if recipe is not None else None
        alone = unblended if unblended in selection.test else None
    return {
        "metric": selection.metric,
        "plan": selection.plan.to_json(),
        "nights": selection.nights,
        "trials": selection.trials,
        "chosen": selection.chosen.to_json(),
        "test": test,
        "differences_from_served": _differences(selection, served, [n for n in roles if n != served], seed),
        "stage_differences": _differences(
            selection, selection.chosen.name, [n for n, role in roles.items() if role == STAGE], seed
        ),
        "model": model,
        "model_differences": _differences(selection, model, baselines, seed) if model else {},
        "model_alone": alone,
        "model_alone_differences": _differences(selection, alone, baselines, seed) if alone else {},
        "decision": selection.decision.to_json(),
        "seconds": selection.seconds,
    }
