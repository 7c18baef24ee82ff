"""Train the two-tower model on the ``train`` split and evaluate it, next to the baselines, on the hold-out;
re-evaluate an exported version; ablate the loss options on one hold-out.

Reads retrieval examples and the catalog (Arrow tables in the contract of ``sql/training``); writes
nothing (see :mod:`pipelines.training.two_tower.export`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.lake import Lake
from pipelines.core.settings import EvaluationConfig, TwoTowerConfig
from pipelines.training.evaluation import embedding_scorer, evaluate_models
from pipelines.training.holdout import Holdout, build_holdout
from pipelines.training.holdout_baselines import baseline_scorers
from pipelines.training.two_tower.data import prepare_training_data, training_dataset
from pipelines.training.two_tower.encoder import Vocabularies
from pipelines.training.two_tower.export import load_towers
from pipelines.training.two_tower.features import USER_COLUMNS
from pipelines.training.two_tower.fit import deterministic_ops, fit_model, seed_everything
from pipelines.training.two_tower.model import TwoTowerModel
from pipelines.training.two_tower.servers import ItemServer, Towers, UserServer, build_towers

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """A trained two-tower model with its evaluation on the run's hold-out.

    Attributes:
        metrics: ``{"two_tower": {...}, "most_popular": {...}, "item_knn": {...}}`` on the same hold-out.
        loss_history: mean training loss per epoch.
        examples_per_second: training throughput per epoch (the first includes graph tracing).
    """

    model: TwoTowerModel
    towers: Towers
    user_server: UserServer
    item_server: ItemServer
    config: TwoTowerConfig
    eval_config: EvaluationConfig
    metrics: dict[str, dict[str, float]]
    holdout: Holdout
    loss_history: list[float]
    examples_per_second: list[float]
    vocabularies: Vocabularies
    n_train_examples: int
    train_seconds: float

    @property
    def throughput(self) -> float:
        """Steady-state examples/s: the median epoch after the first (which traces the graph)."""
        rates = self.examples_per_second[1:] or self.examples_per_second
        return float(np.median(rates))

    def report(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "holdout": self.holdout.summary(),
            "loss_history": self.loss_history,
            "examples_per_second": self.examples_per_second,
            "throughput": self.throughput,
            "n_train_examples": self.n_train_examples,
            "train_seconds": self.train_seconds,
            "temperature": float(self.model.temperature.numpy()),
        }


def train_two_tower(
    examples: pa.Table | pd.DataFrame,
    catalog: pa.Table | pd.DataFrame,
    config: TwoTowerConfig,
    eval_config: EvaluationConfig,
    eval_users: pa.Table | pd.DataFrame | None = None,
    holdout: Holdout | None = None,
) -> TrainResult:
    """Train on the ``train`` split, then evaluate the model and the baselines on the ``eval`` split.

    Args:
        examples: retrieval examples (see the data contract in ``sql/training``).
        catalog: posts to rank at eval time and to draw uniform negatives from.
        config: model, loss and schedule.
        eval_config: cut-offs and baseline settings.
        eval_users: user state at the start of the eval window; derived from the first eval example of
            each user when None.
        holdout: a hold-out already built from these examples (ablations share one).

    Returns:
        The trained model, its metrics next to the baselines', the loss history and throughput.

    Raises:
        ValueError: bad or missing input (the column or row is named), or no train/eval rows.
    """
    if holdout is None:
        holdout = build_holdout(examples, catalog, eval_config, USER_COLUMNS, users=eval_users)
    seed_everything(config.seed)
    started = time.perf_counter()
    data = prepare_training_data(examples, catalog, config)
    log.info(
        "two-tower: %d training examples, %d candidate posts, %d known posts, %d known users",
        data.n_examples,
        len(data.candidate_ids),
        len(data.vocab.item_ids),
        len(data.vocab.user_ids),
    )
    with deterministic_ops(config.deterministic_ops):
        model = TwoTowerModel(data, config)
        losses, rates = fit_model(model, training_dataset(data, config), config, data.n_examples)
    train_seconds = time.perf_counter() - started
    user_server = UserServer(data.encoder, model.user_tower, config)
    item_server = ItemServer(data.encoder, model.item_tower, config)
    towers = build_towers(user_server.embed, item_server.embed, config, None, (user_server, item_server))
    metrics = evaluate_towers(towers, holdout, eval_config, with_baselines=True)
    return TrainResult(
        model=model,
        towers=towers,
        user_server=user_server,
        item_server=item_server,
        config=config,
        eval_config=eval_config,
        metrics=metrics,
        holdout=holdout,
        loss_history=losses,
        examples_per_second=rates,
        vocabularies=data.vocab,
        n_train_examples=data.n_examples,
        train_seconds=train_seconds,
    )


def evaluate_towers(
    towers: Towers, holdout: Holdout, eval_config: EvaluationConfig, with_baselines: bool = False
) -> dict[str, dict[str, float]]:
    """Metrics of a two-tower model (trained now or reloaded) on ``holdout``, optionally with the baselines.

    Returns:
        ``{"two_tower": metrics, ...baselines}``.
    """
    user_embeddings = towers.embed_users(holdout.users)
    item_embeddings = towers.embed_items(holdout.catalog)
    scorers = {"two_tower": embedding_scorer(user_embeddings, item_embeddings)}
    if with_baselines:
        scorers.update(baseline_scorers(holdout, eval_config))
    return evaluate_models(scorers, holdout, eval_config)


def evaluate_version(
    lake: Lake, version: str, holdout: Holdout, eval_config: EvaluationConfig
) -> dict[str, float]:
    """Re-evaluate an exported model (e.g. the champion) on this run's hold-out.

    Raises:
        FileNotFoundError: the version was never exported completely.
    """
    return evaluate_towers(load_towers(lake, version), holdout, eval_config)["two_tower"]


ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "with_logq": {"logq_correction": True},
    "no_logq": {"logq_correction": False},
    "no_accidental_hit_removal": {"remove_accidental_hits": False},
    "no_mixed_negatives": {"mixed_negatives": 0},
}


def ablate_two_tower(
    examples: pa.Table | pd.DataFrame,
    catalog: pa.Table | pd.DataFrame,
    config: TwoTowerConfig,
    eval_config: EvaluationConfig,
    variants: tuple[str, ...] = tuple(ABLATIONS),
    eval_users: pa.Table | pd.DataFrame | None = None,
) -> dict[str, dict[str, float]]:
    """Train one model per variant on the same data and hold-out and return each one's metrics.

    A variant sets one option on top of ``config`` (see :data:`ABLATIONS`); ``full`` is ``config``
    itself. A variant that changes nothing reuses the metrics of the identical run instead of retraining.

    Returns:
        ``{variant: two-tower metrics}``, plus ``"most_popular"`` and ``"item_knn"`` from the same hold-out.

    Raises:
        ValueError: an unknown variant name.
    """
    unknown = [v for v in variants if v not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; choose from {sorted(ABLATIONS)}")
    holdout = build_holdout(examples, catalog, eval_config, USER_COLUMNS, users=eval_users)
    results: dict[str, dict[str, float]] = {}
    by_config: dict[str, dict[str, dict[str, float]]] = {}
    for variant in variants:
        variant_config = config.model_copy(update=ABLATIONS[variant])
        key = variant_config.model_dump_json()
        if key not in by_config:
            by_config[key] = train_two_tower(
                examples, catalog, variant_config, eval_config, holdout=holdout
            ).metrics
        results[variant] = by_config[key]["two_tower"]
        log.info(
            "ablation %s: recall_at_50=%.4f", variant, results[variant].get("recall_at_50", float("nan"))
        )
    baselines = next(iter(by_config.values()), {})
    results.update({name: m for name, m in baselines.items() if name != "two_tower"})
    return results
