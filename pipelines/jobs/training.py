"""The training job: candidate systems trained on the data before past nights, their lists replayed and
scored on what users did next, and the system that wins the gate promoted (``pipelines.evaluation``).

A run whose candidate does not win is not a failure: the champion stays and the result says why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext
    from pipelines.evaluation.night_models import Trained

log = logging.getLogger(__name__)


def _export(ctx: RunContext, trained: Trained) -> None:
    from pipelines.core.paths import ALS, RANKER, TWO_TOWER

    if trained.kind == TWO_TOWER:
        from pipelines.training.two_tower import export_two_tower

        export_two_tower(trained.result, ctx.lake, trained.version)
    elif trained.kind == RANKER:
        from pipelines.training.ranker import save_ranker

        save_ranker(trained.result, ctx.lake, trained.version)
    elif trained.kind == ALS:
        from pipelines.training.als import save_als

        save_als(trained.result, ctx.lake, trained.version)


def train_system(ctx: RunContext) -> dict[str, Any]:
    """Choose, gate and promote the system the nightly job serves, from the data up to ``ds``.

    Training again on data the champion already covers is skipped unless ``force_retrain`` is set.

    Raises:
        pipelines.serving.inputs.MissingFeaturesError: the features of ``ds`` are not built.
        pipelines.evaluation.nights.NotEnoughHistory: the data is too short for the replayed nights.
    """
    from pipelines.core.paths import SYSTEM
    from pipelines.evaluation.selection import select_system, selection_facts
    from pipelines.serving.inputs import require_features
    from pipelines.serving.system import served_system
    from pipelines.training import registry

    with ctx.warehouse() as warehouse:
        require_features(warehouse, ctx.ds)
    champion = registry.current_champion(ctx.lake, SYSTEM)
    if champion and champion["version"].startswith(f"{ctx.ds}-") and not ctx.settings.force_retrain:
        reason = f"system {champion['version']} covers data up to {ctx.ds}; set force_retrain to train again"
        log.info(reason)
        return {"version": champion["version"], "promoted": False, "skipped": True, "reason": reason}
    in_force = served_system(ctx.lake)
    with ctx.warehouse() as warehouse:
        selection = select_system(warehouse, ctx.lake, ctx.ds, ctx.settings, in_force)
    facts = selection_facts(selection, seed=ctx.settings.selection.seed)
    decision = selection.decision
    version = champion["version"] if champion else None
    if decision.promoted and decision.system is not None:
        for trained in selection.exports:
            _export(ctx, trained)
        version = registry.new_version(ctx.ds, decision.system.to_json())
        served = facts["test"][decision.served]
        registry.promote(
            ctx.lake,
            SYSTEM,
            {
                "version": version,
                "system": decision.system.to_json(),
                "label": decision.system.label,
                "name": decision.served,
                "metrics": served["summary"],
                "decision": decision.to_json(),
            },
            expected_champion=champion["version"] if champion else None,
        )
    log.info("system %s: %s", "promoted" if decision.promoted else "kept", decision.reason)
    return {
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "exported": [{"kind": t.kind, "version": t.version} for t in selection.exports if decision.promoted],
        "selection": facts,
    }
