"""Training jobs: a two-tower and a ranker challenger, each promoted only if blessed.

A rejected challenger is not a failure: the champion stays and the result says why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import PermanentError

if TYPE_CHECKING:
    import pyarrow as pa

    from pipelines.core.context import RunContext
    from pipelines.core.warehouse import Warehouse

log = logging.getLogger(__name__)


class NoTrainingData(PermanentError):
    """The training window of the run date holds no examples."""


class NoRetrievalChampion(PermanentError):
    """The ranker is trained on two-tower scores, and no two-tower champion exists yet."""


def _already_trained(ctx: RunContext, kind: str) -> dict[str, Any] | None:
    """The result to return instead of training when the champion already covers data up to ``ds``."""
    from pipelines.training import registry

    champion = registry.current_champion(ctx.lake, kind)
    if ctx.settings.force_retrain or not champion or not champion["version"].startswith(f"{ctx.ds}-"):
        return None
    reason = (
        f"champion {champion['version']} was trained on data up to {ctx.ds}; set force_retrain to train again"
    )
    log.info("%s: %s", kind, reason)
    return {"version": champion["version"], "promoted": False, "skipped": True, "reason": reason}


def training_catalog(warehouse: Warehouse, ctx: RunContext) -> pa.Table:
    """Every post as of ``ds`` that is not deleted, whatever its age: what evaluation ranks over."""
    from pipelines.core.schema import SERVING_INPUTS
    from pipelines.core.sql_params import sql_params

    return warehouse.run_query(
        SERVING_INPUTS["items"],
        ctx.ds,
        **sql_params(ctx.settings),
        max_item_age_days=0,
    )


def train_two_tower(ctx: RunContext) -> dict[str, Any]:
    """Train a two-tower challenger on the window ending ``ds``, export it, promote it only if blessed."""
    from pipelines.core.paths import TWO_TOWER
    from pipelines.core.schema import RETRIEVAL_DATASET
    from pipelines.training import registry, two_tower

    cfg = ctx.settings.two_tower
    skipped = _already_trained(ctx, TWO_TOWER)
    if skipped:
        return skipped
    with ctx.warehouse() as warehouse:
        examples = warehouse.run_query(
            RETRIEVAL_DATASET, ctx.ds, train_days=cfg.train_days, eval_days=cfg.eval_days
        )
        catalog = training_catalog(warehouse, ctx)
    if examples.num_rows == 0:
        raise NoTrainingData(
            f"ds={ctx.ds}: no retrieval examples in the training window; build features first"
        )
    result = two_tower.train_two_tower(examples, catalog, cfg, ctx.settings.evaluation)
    version = registry.new_version(ctx.ds, cfg.model_dump())
    two_tower.export_two_tower(result, ctx.lake, version)
    champion = registry.current_champion(ctx.lake, TWO_TOWER)
    champion_metrics = (
        two_tower.evaluate_version(ctx.lake, champion["version"], result.holdout, ctx.settings.evaluation)
        if champion
        else None
    )
    decision = registry.promote_if_blessed(
        ctx.lake,
        TWO_TOWER,
        version,
        result.metrics["two_tower"],
        champion_metrics,
        ctx.settings.blessing,
        champion_version=champion["version"] if champion else None,
    )
    log.info("two-tower %s: %s", version, decision.reason)
    return {
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metrics": result.metrics,
        "champion_metrics": champion_metrics,
        "loss_history": result.loss_history,
        "examples_per_second": result.throughput,
        "n_train_examples": result.n_train_examples,
    }


def train_ranker(ctx: RunContext) -> dict[str, Any]:
    """Train a LightGBM ranker challenger on logged impressions, scored by the two-tower champion, and
    promote it only if it beats the ranker champion on the same hold-out."""
    from pipelines.core.paths import RANKER, TWO_TOWER
    from pipelines.core.schema import RANKING_DATASET
    from pipelines.training import ranker, registry
    from pipelines.training.retrieval_scores import retrieval_scores_for_rows
    from pipelines.training.two_tower import load_towers

    cfg = ctx.settings.ranker
    skipped = _already_trained(ctx, RANKER)
    if skipped:
        return skipped
    retrieval_version = registry.champion_version(ctx.lake, TWO_TOWER)
    if retrieval_version is None:
        raise NoRetrievalChampion(
            "no two-tower champion to score ranking examples with: train the two-tower first"
        )
    with ctx.warehouse() as warehouse:
        rows = warehouse.run_query(
            RANKING_DATASET, ctx.ds, train_days=cfg.train_days, eval_days=cfg.eval_days
        )
        catalog = training_catalog(warehouse, ctx)
    if rows.num_rows == 0:
        raise NoTrainingData(f"ds={ctx.ds}: no ranking examples in the training window; build features first")
    towers = load_towers(ctx.lake, retrieval_version)
    scores = retrieval_scores_for_rows(towers, rows, catalog, cfg.retrieval_depth)
    result = ranker.train_ranker(rows, scores, cfg)
    version = registry.new_version(ctx.ds, cfg.model_dump())
    ranker.save_ranker(result, ctx.lake, version)
    champion = registry.current_champion(ctx.lake, RANKER)
    champion_metrics = (
        ranker.evaluate_ranker(ranker.load_ranker(ctx.lake, champion["version"]), rows, scores, cfg)
        if champion
        else None
    )
    decision = registry.promote_if_blessed(
        ctx.lake,
        RANKER,
        version,
        result.metrics,
        champion_metrics,
        cfg.blessing,
        champion_version=champion["version"] if champion else None,
    )
    log.info("ranker %s: %s", version, decision.reason)
    return {
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metrics": result.metrics,
        "champion_metrics": champion_metrics,
        "two_tower_version": retrieval_version,
    }
