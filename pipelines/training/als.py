"""The matrix-factorisation baseline: implicit-feedback ALS (the ``implicit`` library) on engagement counts.

Training learns a factor per post; serving folds each user in from their history against those post
factors (one least-squares solve per user), so users who arrived after training are served too. Posts the
model never saw have no factor and are never retrieved by it.

Writes ``models/als/<version>/`` in the lake: ``item_factors.npy``, ``item_ids.json`` and ``config.json``
(written last: the registry's mark of a complete export).
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.training.registry import CONFIG_FILE, open_export, seal_export

log = logging.getLogger(__name__)

ALS = "als"
FACTORS_FILE = "item_factors.npy"
IDS_FILE = "item_ids.json"


@dataclass(frozen=True)
class AlsParams:
    """ALS hyper-parameters: factors, L2 regularisation, confidence ``1 + alpha * count``, sweeps."""

    factors: int = 32
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    seed: int = 7


@dataclass
class AlsModel:
    """Post factors (row ``j`` is ``item_ids[j]``) and the parameters they were learnt with."""

    item_ids: pa.Array
    item_factors: np.ndarray
    params: AlsParams

    def _solver(self):
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=self.params.factors,
            regularization=self.params.regularization,
            alpha=self.params.alpha,
            iterations=self.params.iterations,
            random_state=self.params.seed,
            num_threads=1,
        )
        model.item_factors = self.item_factors
        model.user_factors = np.zeros((1, self.params.factors), np.float32)
        return model

    def user_vectors(self, history: sp.csr_matrix) -> np.ndarray:
        """Fold users in: (users x posts of ``item_ids``) engagement counts -> (users x factors)."""
        if history.shape[1] != len(self.item_ids):
            raise ValueError(f"history has {history.shape[1]} post columns, the model {len(self.item_ids)}")
        if history.shape[0] == 0:
            return np.zeros((0, self.params.factors), np.float32)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            vectors = self._solver().recalculate_user(np.arange(history.shape[0]), history.tocsr())
        return np.asarray(vectors, dtype=np.float32).reshape(history.shape[0], -1)


def train_als(counts: sp.csr_matrix, item_ids: pa.Array, params: AlsParams) -> AlsModel:
    """Fit ALS on (users x posts) engagement counts.

    Raises:
        ValueError: no engagement at all, or ``item_ids`` does not match the matrix.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    if counts.nnz == 0:
        raise ValueError("ALS needs at least one engagement")
    if counts.shape[1] != len(item_ids):
        raise ValueError(f"{counts.shape[1]} post columns but {len(item_ids)} post ids")
    started = time.perf_counter()
    # Single-threaded BLAS inside implicit's own threads (it checks, and warns, when the model is made).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            num_threads=1,
        )
        model.fit(counts.tocsr().astype(np.float32), show_progress=False)
    log.info(
        "ALS: %d users x %d posts, %d engagements, %d factors in %.1f s",
        counts.shape[0],
        counts.shape[1],
        counts.nnz,
        params.factors,
        time.perf_counter() - started,
    )
    return AlsModel(item_ids, np.asarray(model.item_factors, dtype=np.float32), params)


def save_als(model: AlsModel, lake: Lake, version: str) -> str:
    """Export to ``models/als/<version>/``, ``config.json`` last.

    Raises:
        FileExistsError: the version was exported before.
    """
    folder = LakePaths.model_dir(ALS, version)
    if lake.exists(f"{folder}/{CONFIG_FILE}"):
        raise FileExistsError(f"{lake.uri(folder)} already holds an exported ALS model")
    buffer = io.BytesIO()
    np.save(buffer, model.item_factors, allow_pickle=False)
    lake.write_bytes(f"{folder}/{FACTORS_FILE}", buffer.getvalue())
    lake.write_bytes(f"{folder}/{IDS_FILE}", json.dumps(model.item_ids.to_pylist()).encode())
    return seal_export(lake, ALS, version, {"kind": ALS, "version": version, "params": asdict(model.params)})


def load_als(lake: Lake, version: str) -> AlsModel:
    """Read an exported ALS model.

    Raises:
        pipelines.training.registry.MissingExportError: no complete export of ``version``.
        pipelines.core.lake.CorruptArtifactError: a file of the export is corrupt.
    """
    folder = LakePaths.model_dir(ALS, version)
    config = open_export(lake, ALS, version)
    factors = np.load(io.BytesIO(lake.read_bytes(f"{folder}/{FACTORS_FILE}")), allow_pickle=False)
    item_ids = pa.array(json.loads(lake.read_bytes(f"{folder}/{IDS_FILE}")), pa.string())
    return AlsModel(item_ids, factors.astype(np.float32), AlsParams(**config["params"]))
