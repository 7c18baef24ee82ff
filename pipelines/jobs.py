"""One function per DAG task: the seam between Airflow (or the CLI) and the stage modules.

Every job takes the run date ``ds`` and per-run ``overrides`` (nested settings built from DAG params by
:func:`overrides_from_params`), opens what it needs from the settings, calls one stage's entry function
and returns a small JSON-serialisable dict (it becomes the task's XCom). Heavy libraries are imported
inside the jobs, so importing this module is cheap.

Failures a retry cannot fix raise :class:`PermanentFailure`; anything else is treated as transient.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.core.schema import check_ds
from pipelines.core.settings import Settings, load_settings

log = logging.getLogger(__name__)


class PermanentFailure(RuntimeError):
    """A failure a retry cannot fix: bad data above the threshold, no blessed model, bad parameters."""


# DAG param name -> (settings section, field). The one place params become settings.
PARAM_TO_SETTING: dict[str, tuple[str, ...]] = {
    "num_shards": ("candidates", "num_shards"),
    "top_k": ("candidates", "top_k"),
    "dry_run_users": ("dry_run_users",),
    "force_retrain": ("force_retrain",),
}


def overrides_from_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Nested settings overrides from a DAG run's params (unset or None params are left out)."""
    overrides: dict[str, Any] = {}
    for name, path in PARAM_TO_SETTING.items():
        value = (params or {}).get(name)
        if value is None:
            continue
        target = overrides
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return overrides


def settings_for(overrides: dict[str, Any] | None) -> Settings:
    """Settings from the environment with the run's overrides applied.

    Raises:
        PermanentFailure: an override is unknown or out of range.
    """
    from pydantic import ValidationError

    try:
        return load_settings().with_overrides(overrides)
    except ValidationError as exc:
        raise PermanentFailure(f"invalid run parameters: {exc}") from exc


def record_fact(lake: Any, ds: str, job: str, result: Any) -> None:
    """Keep a job's result as ``reports/ds=<ds>/facts/<job>.json`` for the run report (one atomic object)."""
    from pipelines.core.schema import LakePaths

    lake.write_json(f"{LakePaths.reports(ds)}/facts/{job}.json", result)


def _already_trained(lake: Any, kind: str, ds: str, settings: Settings) -> dict[str, Any] | None:
    """The result to return instead of training when the champion already covers data up to ``ds``."""
    from pipelines.training import registry

    champion = registry.current_champion(lake, kind)
    if settings.force_retrain or not champion or not champion["version"].startswith(f"{ds}-"):
        return None
    reason = (
        f"champion {champion['version']} was trained on data up to {ds}; set force_retrain to train again"
    )
    log.info("%s: %s", kind, reason)
    return {"version": champion["version"], "promoted": False, "skipped": True, "reason": reason}


def run_features(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the feature tables of ``ds`` (quality gate included)."""
    from pipelines.core.lake import Lake
    from pipelines.core.warehouse import open_warehouse
    from pipelines.data.features import DataQualityError, build_features

    ds = check_ds(ds)
    settings = settings_for(overrides)
    with open_warehouse(settings) as warehouse:
        lake = Lake(settings.lake_url)
        try:
            report = build_features(warehouse, lake, ds, settings)
        except DataQualityError as exc:
            raise PermanentFailure(str(exc)) from exc
    record_fact(lake, ds, "features", report.to_dict())
    return report.to_dict()


def describe_outputs(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the outputs of ``ds`` are, and whether each is published."""
    from pipelines.core.lake import Lake
    from pipelines.core.schema import LakePaths

    ds = check_ds(ds)
    settings = settings_for(overrides)
    lake = Lake(settings.lake_url)
    datasets = {
        "inputs": LakePaths.inputs(ds),
        "item_embeddings": LakePaths.embeddings(ds),
        "index": LakePaths.index(ds),
        "candidates": LakePaths.candidates(ds),
        "digests": LakePaths.digests(ds),
        "report": LakePaths.reports(ds),
        "quarantine": LakePaths.quarantine(ds),
    }
    out: dict[str, Any] = {
        "warehouse": str(settings.duckdb_file)
        if settings.warehouse == "duckdb"
        else settings.bigquery_dataset,
        "lake": lake.uri(""),
    }
    for name, rel in datasets.items():
        out[name] = {"uri": lake.uri(rel), "published": lake.is_published(rel)}
    return out


# -- training -------------------------------------------------------------------------------------------
def train_two_tower(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a two-tower challenger on the window ending ``ds``, export it, promote it only if blessed.

    A rejected challenger is not a failure: the champion stays and the result says why.
    """
    from pipelines.core.lake import Lake
    from pipelines.core.schema import RETRIEVAL_DATASET_SQL, TWO_TOWER
    from pipelines.core.warehouse import open_warehouse
    from pipelines.training import registry, two_tower

    ds = check_ds(ds)
    settings = settings_for(overrides)
    lake = Lake(settings.lake_url)
    cfg = settings.two_tower
    skipped = _already_trained(lake, TWO_TOWER, ds, settings)
    if skipped:
        return skipped
    with open_warehouse(settings) as warehouse:
        examples = warehouse.query_file(
            RETRIEVAL_DATASET_SQL, ds, train_days=cfg.train_days, eval_days=cfg.eval_days
        )
        catalog = training_catalog(warehouse, ds, settings)
    if examples.num_rows == 0:
        raise PermanentFailure(f"ds={ds}: no retrieval examples in the training window; build features first")
    result = two_tower.train_two_tower(examples, catalog, cfg, settings.evaluation)
    version = registry.new_version(ds, cfg.model_dump())
    two_tower.export_two_tower(result, lake, version)
    champion = registry.current_champion(lake, TWO_TOWER)
    champion_metrics = (
        two_tower.evaluate_version(lake, champion["version"], result.holdout, settings.evaluation)
        if champion
        else None
    )
    decision = registry.promote_if_blessed(
        lake,
        TWO_TOWER,
        version,
        result.metrics["two_tower"],
        champion_metrics,
        settings.blessing,
        champion_version=champion["version"] if champion else None,
    )
    log.info("two-tower %s: %s", version, decision.reason)
    result_facts = {
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metrics": result.metrics,
        "champion_metrics": champion_metrics,
        "loss_history": result.loss_history,
        "examples_per_second": result.throughput,
        "n_train_examples": result.n_train_examples,
    }
    record_fact(lake, ds, "train_two_tower", result_facts)
    return result_facts


def training_catalog(warehouse: Any, ds: str, settings: Settings) -> Any:
    """Every post as of ``ds`` that is not deleted, whatever its age: what evaluation ranks over."""
    from pipelines.data.features import sql_params

    return warehouse.query_file(
        "serving/items.sql",
        ds,
        **sql_params(settings),
        max_item_age_days=settings.features.lookback_days * 100,
    )


def train_ranker(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a LightGBM ranker challenger on logged impressions, scored by the two-tower champion, and
    promote it only if it beats the ranker champion on the same hold-out."""
    from pipelines.core.lake import Lake
    from pipelines.core.schema import RANKER, RANKING_DATASET_SQL, TWO_TOWER
    from pipelines.core.warehouse import open_warehouse
    from pipelines.serving.candidates import champion_version, retrieval_scores_for_rows
    from pipelines.training import ranker, registry
    from pipelines.training.two_tower import load_towers

    ds = check_ds(ds)
    settings = settings_for(overrides)
    lake = Lake(settings.lake_url)
    cfg = settings.ranker
    skipped = _already_trained(lake, RANKER, ds, settings)
    if skipped:
        return skipped
    retrieval_version = champion_version(lake, TWO_TOWER)
    if retrieval_version is None:
        raise PermanentFailure(
            "no two-tower champion to score ranking examples with: train the two-tower first"
        )
    with open_warehouse(settings) as warehouse:
        rows = warehouse.query_file(
            RANKING_DATASET_SQL, ds, train_days=cfg.train_days, eval_days=cfg.eval_days
        )
        catalog = training_catalog(warehouse, ds, settings)
    if rows.num_rows == 0:
        raise PermanentFailure(f"ds={ds}: no ranking examples in the training window; build features first")
    towers = load_towers(lake, retrieval_version)
    scores = retrieval_scores_for_rows(towers, rows, catalog, cfg.retrieval_depth)
    result = ranker.train_ranker(rows, scores, cfg)
    version = registry.new_version(ds, cfg.model_dump())
    ranker.save_ranker(result, lake, version)
    champion = registry.current_champion(lake, RANKER)
    champion_metrics = (
        ranker.evaluate_ranker(ranker.load_ranker(lake, champion["version"]), rows, scores, cfg)
        if champion
        else None
    )
    decision = registry.promote_if_blessed(
        lake,
        RANKER,
        version,
        result.metrics,
        champion_metrics,
        cfg.blessing,
        champion_version=champion["version"] if champion else None,
    )
    log.info("ranker %s: %s", version, decision.reason)
    result_facts = {
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metrics": result.metrics,
        "champion_metrics": champion_metrics,
        "two_tower_version": retrieval_version,
    }
    record_fact(lake, ds, "train_ranker", result_facts)
    return result_facts


# -- nightly --------------------------------------------------------------------------------------------
def _nightly(overrides: dict[str, Any] | None) -> tuple[Settings, Any]:
    from pipelines.core.lake import Lake

    settings = settings_for(overrides)
    return settings, Lake(settings.lake_url)


def export_inputs(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Snapshot the serving inputs of ``ds`` into the lake."""
    from pipelines.core.warehouse import open_warehouse
    from pipelines.serving import candidates

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    with open_warehouse(settings) as warehouse:
        try:
            result = candidates.export_inputs(warehouse, lake, ds, settings)
        except candidates.EmptyInputsError as exc:
            raise PermanentFailure(str(exc)) from exc
    record_fact(lake, ds, "export_inputs", result)
    return result


def embed_items(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Batch-predict the champion item tower over the catalog of ``ds``."""
    from pipelines.serving import candidates

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    try:
        result = candidates.embed_items(lake, ds, settings)
    except candidates.NoChampionError as exc:
        raise PermanentFailure(str(exc)) from exc
    record_fact(lake, ds, "embed_items", result)
    return result


def build_index(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build and recall-check the ScaNN index of ``ds``."""
    from pipelines.serving import candidates
    from pipelines.serving.index import IndexRecallError

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    try:
        result = candidates.build_index(lake, ds, settings)
    except IndexRecallError as exc:
        raise PermanentFailure(str(exc)) from exc
    record_fact(lake, ds, "build_index", result)
    return result


def plan_shards(ds: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One work item per candidate shard of ``ds``."""
    from pipelines.serving import candidates

    settings, lake = _nightly(overrides)
    return candidates.plan_shards(lake, check_ds(ds), settings)


def candidates_for_shard(
    ds: str, shard: int, num_shards: int, staging: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Compute one shard's candidate lists into the staging folder."""
    from pipelines.serving import candidates

    settings, lake = _nightly(overrides)
    return candidates.candidates_for_shard(lake, check_ds(ds), shard, num_shards, staging, settings)


def publish_candidates(
    ds: str, staging: str, shard_results: list[dict[str, Any]], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Publish ``ds``'s candidates once every shard is written."""
    from pipelines.serving import candidates

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    result = candidates.publish_candidates(lake, ds, staging, list(shard_results), settings)
    record_fact(lake, ds, "publish_candidates", result)
    return result


def _digest_inputs(lake: Any, ds: str) -> tuple[Any, Any]:
    """The users (``profiles``) and ``items`` serving inputs of ``ds`` that digests are made from."""
    from pipelines.serving.candidates import read_input

    return read_input(lake, ds, "profiles"), read_input(lake, ds, "items")


def render_digests(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render and publish the digest e-mails of ``ds`` (a sample only, unpublished, in a dry run)."""
    from pipelines.delivery import digests

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    report = digests.render_digests(
        lake, ds, *_digest_inputs(lake, ds), settings.digest, dry_run_users=settings.dry_run_users
    )
    record_fact(lake, ds, "render_digests", report.to_dict())
    return report.to_dict()


def plan_digests(ds: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One digest work item per published candidates shard of ``ds`` (the nightly DAG maps over them)."""
    from pipelines.delivery import digests

    settings, lake = _nightly(overrides)
    return digests.plan_digests(lake, check_ds(ds), dry_run=bool(settings.dry_run_users))


def render_digest_shard(
    ds: str, shard: int, num_shards: int, staging: str | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Render one shard's digests into the staging folder (a sample, written nowhere, in a dry run)."""
    from pipelines.delivery import digests

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    result = digests.render_digest_shard(
        lake,
        ds,
        shard,
        num_shards,
        staging,
        *_digest_inputs(lake, ds),
        settings.digest,
        dry_run_users=settings.dry_run_users,
    )
    summary = result.summary()
    summary["sample"] = [m.message_id for m in result.messages]
    return summary


def publish_digests(
    ds: str, staging: str | None, shard_results: list[dict[str, Any]], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Publish ``ds``'s digests once every shard is rendered (nothing in a dry run)."""
    from pipelines.delivery import digests

    ds = check_ds(ds)
    settings, lake = _nightly(overrides)
    if settings.dry_run_users or staging is None:
        return {"published": False, "dry_run": True, "shards": list(shard_results)}
    report = digests.publish_digests(lake, ds, staging, list(shard_results), settings.digest)
    record_fact(lake, ds, "render_digests", report.to_dict())
    return report.to_dict()


# -- report ---------------------------------------------------------------------------------------------
def write_report(ds: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Publish the run report of ``ds`` from whatever facts the night left.

    A missing fact is not a failure (a night without training has no training facts, a dry run publishes
    no candidates): its section says so and the report shows the champion in force instead.

    Raises:
        PermanentFailure: a fact or published dataset is malformed.
    """
    from pipelines.delivery import report

    ds = check_ds(ds)
    _, lake = _nightly(overrides)
    try:
        summary = report.build_report(lake, ds)
    except report.ReportInputError as exc:
        raise PermanentFailure(str(exc)) from exc
    return summary.to_dict()
