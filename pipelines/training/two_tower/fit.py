"""Fitting the two-tower model reproducibly: seeding, TensorFlow's deterministic kernels, and the fit loop
that records the loss and throughput of every epoch.

Reads and writes nothing; the same data and seed give the same model.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.model import TwoTowerModel

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow (the global seed also fixes Keras' initialisers)."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def deterministic_ops(enabled: bool) -> Iterator[None]:
    """Run the block with TensorFlow's deterministic kernels, then restore the process-wide setting.

    TensorFlow's public API can only switch determinism on; the switch back uses its config module so
    that other stages in the same process keep their own choice.
    """
    from tensorflow.python.framework import config as tf_config

    switch = enabled and not tf_config.is_op_determinism_enabled()
    if switch:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_config.disable_op_determinism()


class _EpochLog(keras.callbacks.Callback):
    def __init__(self, n_examples: int) -> None:
        super().__init__()
        self.n_examples = n_examples
        self.losses: list[float] = []
        self.rates: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        rate = self.n_examples / max(time.perf_counter() - self._started, 1e-9)
        loss = float((logs or {})["epoch_loss"])
        self.losses.append(loss)
        self.rates.append(rate)
        log.info("epoch %d: loss %.4f, %.0f examples/s", epoch + 1, loss, rate)


def fit_model(
    model: TwoTowerModel, dataset: tf.data.Dataset, config: TwoTowerConfig, n_examples: int
) -> tuple[list[float], list[float]]:
    """Compile and fit; return the mean loss and the examples/s of every epoch."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate))
    callback = _EpochLog(n_examples)
    model.fit(dataset, epochs=config.epochs, verbose=0, callbacks=[callback])
    return callback.losses, callback.rates
