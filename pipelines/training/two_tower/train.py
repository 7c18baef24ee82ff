"""Train the two-tower model on the ``train`` rows of retrieval examples.

How good a model is gets measured on the lists it produces, replayed on nights it never saw
(``pipelines.evaluation``); this module only learns. Reads retrieval examples and the catalog (Arrow tables
in the contract of ``sql/models/training``); writes nothing (see :mod:`pipelines.training.two_tower.export`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.data import prepare_training_data, training_dataset
from pipelines.training.two_tower.encoder import Vocabularies
from pipelines.training.two_tower.fit import deterministic_ops, fit_model, seed_everything
from pipelines.training.two_tower.model import TwoTowerModel
from pipelines.training.two_tower.servers import ItemServer, Towers, UserServer, build_towers

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """A trained two-tower model.

    Attributes:
        towers: batched embedding functions over raw tables.
        loss_history: mean training loss per epoch.
        examples_per_second: training throughput per epoch (the first includes graph tracing).
    """

    model: TwoTowerModel
    towers: Towers
    user_server: UserServer
    item_server: ItemServer
    config: TwoTowerConfig
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
            "loss_history": self.loss_history,
            "examples_per_second": self.examples_per_second,
            "throughput": self.throughput,
            "n_train_examples": self.n_train_examples,
            "train_seconds": self.train_seconds,
            "temperature": float(self.model.temperature.numpy()),
        }


def train_two_tower(
    examples: pa.Table | pd.DataFrame, catalog: pa.Table | pd.DataFrame, config: TwoTowerConfig
) -> TrainResult:
    """Train on the rows of ``examples`` whose ``split`` is ``train``.

    Args:
        examples: retrieval examples (see the data contract in ``sql/models/training``).
        catalog: posts to draw uniform negatives from.
        config: model, loss and schedule.

    Returns:
        The trained model with its loss history and throughput.

    Raises:
        ValueError: bad or missing input (the column or row is named), or no train rows.
    """
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
    return TrainResult(
        model=model,
        towers=towers,
        user_server=user_server,
        item_server=item_server,
        config=config,
        loss_history=losses,
        examples_per_second=rates,
        vocabularies=data.vocab,
        n_train_examples=data.n_examples,
        train_seconds=train_seconds,
    )
