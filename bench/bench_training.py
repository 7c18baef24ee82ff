"""Two-tower training benchmark: throughput of the tuned tf.data pipeline against a naive one.

Builds (or reuses) the synthetic world's retrieval examples, then in one run:

1. trains the default config with the tuned pipeline (features encoded once, per-epoch shuffled index
   batches gathered from memory, prefetch), with deterministic TF ops on and off;
2. trains the same model with a naive pipeline: a Python generator yielding one raw example at a time,
   batched, with the lookups and text vectorisation re-run on every batch of every epoch;
3. prints steady-state examples/s (median epoch after the first, which traces the graph).

How good the lists of a trained model are is measured by replaying them (``bench/bench_quality.py``).

Usage (from the repo root, with TF_USE_LEGACY_KERAS=1 and PYTHONPATH=.):

    python bench/bench_training.py [--data-dir DIR] [--ds 2026-11-20] [--scale default]
    python bench/bench_training.py --examples ex.parquet --catalog catalog.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from pipelines.core.model_settings import TwoTowerConfig
from pipelines.training.two_tower.data import TrainingData, prepare_training_data, training_dataset
from pipelines.training.two_tower.fit import deterministic_ops, fit_model, seed_everything
from pipelines.training.two_tower.model import TwoTowerModel

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench_training")


def world_examples(data_dir: Path, ds: str, scale: str) -> tuple[pa.Table, pa.Table]:
    """Retrieval examples and catalog of the synthetic world ending on ``ds`` (generated once per dir)."""
    examples_file, catalog_file = data_dir / f"examples-{ds}.parquet", data_dir / f"catalog-{ds}.parquet"
    if not examples_file.exists():
        env = {**os.environ, "NIGHTFEED_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
        for args in (["world", "--scale", scale, "--end-date", ds], ["features", "--end", ds]):
            log.info("python -m pipelines %s", " ".join(args))
            subprocess.run(
                [sys.executable, "-m", "pipelines", *args], check=True, env=env, stdout=subprocess.DEVNULL
            )
        os.environ["NIGHTFEED_DATA_DIR"] = str(data_dir)
        from pipelines.core.context import RunContext
        from pipelines.core.schema import RETRIEVAL_DATASET, SERVING_INPUTS
        from pipelines.core.sql_params import sql_params

        ctx = RunContext.create(ds)
        cfg = ctx.settings.two_tower
        with ctx.warehouse() as warehouse:
            examples = warehouse.run_query(RETRIEVAL_DATASET, ctx.ds, train_days=cfg.train_days, eval_days=0)
            catalog = warehouse.run_query(
                SERVING_INPUTS["items"], ctx.ds, **sql_params(ctx.settings), max_item_age_days=0
            )
        pq.write_table(examples, examples_file)
        pq.write_table(catalog, catalog_file)
    return pq.read_table(examples_file), pq.read_table(catalog_file)


def naive_dataset(data: TrainingData, config: TwoTowerConfig) -> tf.data.Dataset:
    """One raw example at a time from Python, batched, encoded again on every batch of every epoch."""
    raw = data.raw_examples
    n = data.n_examples

    def rows():
        order = np.random.default_rng(config.seed).permutation(n)
        for i in order:
            yield {
                "user": {k: v[i] for k, v in raw["user"].items()},
                "item": {k: v[i] for k, v in raw["item"].items()},
                "candidate_key": raw["candidate_key"][i],
            }

    def spec(values: np.ndarray) -> tf.TensorSpec:
        dtype = tf.string if values.dtype == object else tf.as_dtype(values.dtype)
        return tf.TensorSpec(values.shape[1:], dtype)

    signature = {
        "user": {k: spec(v) for k, v in raw["user"].items()},
        "item": {k: spec(v) for k, v in raw["item"].items()},
        "candidate_key": tf.TensorSpec([], tf.int64),
    }
    encoder = data.encoder
    return (
        tf.data.Dataset.from_generator(rows, output_signature=signature)
        .batch(config.batch_size)
        .map(
            lambda b: {
                "user": encoder.encode_users(b["user"]),
                "item": encoder.encode_items(b["item"]),
                "candidate_key": b["candidate_key"],
            }
        )
    )


def time_fit(
    data: TrainingData, config: TwoTowerConfig, dataset: tf.data.Dataset, deterministic: bool
) -> dict:
    seed_everything(config.seed)
    with deterministic_ops(deterministic):
        model = TwoTowerModel(data, config)
        losses, rates = fit_model(model, dataset, config, data.n_examples)
    return {
        "examples_per_second": round(float(np.median(rates[1:] or rates))),
        "per_epoch": [round(r) for r in rates],
        "final_loss": round(losses[-1], 4),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="world + warehouse cache (temp if unset)")
    parser.add_argument("--ds", default="2026-11-20")
    parser.add_argument("--scale", default="default")
    parser.add_argument("--examples", type=Path, help="parquet of retrieval examples (skips the world)")
    parser.add_argument("--catalog", type=Path, help="parquet of the catalog (with --examples)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.examples:
        examples, catalog = pq.read_table(args.examples), pq.read_table(args.catalog)
    else:
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="nightfeed-bench-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        examples, catalog = world_examples(data_dir, args.ds, args.scale)
    config = TwoTowerConfig(epochs=args.epochs)

    started = time.perf_counter()
    data = prepare_training_data(examples, catalog, config)
    prepare_seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "examples": data.n_examples,
        "catalog": catalog.num_rows,
        "batch_size": config.batch_size,
        "mixed_negatives": config.mixed_negatives,
        "prepare_seconds": round(prepare_seconds, 2),
        "cpu_count": os.cpu_count(),
    }
    report["tuned_deterministic"] = time_fit(data, config, training_dataset(data, config), True)
    report["tuned_nondeterministic"] = time_fit(data, config, training_dataset(data, config), False)
    report["naive_generator"] = time_fit(data, config, naive_dataset(data, config), True)
    report["speedup_tuned_vs_naive"] = round(
        report["tuned_deterministic"]["examples_per_second"]
        / report["naive_generator"]["examples_per_second"],
        2,
    )

    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
