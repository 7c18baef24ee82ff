"""The ranker's lake I/O: export a trained ranker to ``models/ranker/<version>/`` and read it back.

Writes ``model.txt``, ``feature_names.json``, ``metrics.json``, then ``config.json`` last. Promotion to
champion is :mod:`pipelines.training.registry`'s, on ``ndcg_at_10``.
"""

from __future__ import annotations

import logging

import lightgbm as lgb

from pipelines.core.lake import Lake
from pipelines.core.paths import RANKER, LakePaths
from pipelines.training.ranker.model import Ranker
from pipelines.training.ranker.train import RankerResult
from pipelines.training.registry import CONFIG_FILE, check_version, open_export, seal_export

log = logging.getLogger(__name__)

MODEL_FILE = "model.txt"
FEATURES_FILE = "feature_names.json"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1


def save_ranker(result: RankerResult, lake: Lake, version: str) -> str:
    """Export a trained ranker to ``models/ranker/<version>/``, ``config.json`` last.

    The folder follows the registry's export contract: a version without ``config.json`` is an
    unfinished export, and only :func:`pipelines.training.registry.promote` makes it a champion.

    Args:
        result: from :func:`pipelines.training.ranker.train.train_ranker`.
        lake: the lake.
        version: a new version name from :func:`pipelines.training.registry.new_version`.

    Returns:
        The URI of the version folder.

    Raises:
        ValueError: a malformed version name.
        FileExistsError: that version was already exported (versions are never overwritten).
    """
    model_dir = LakePaths.model_dir(RANKER, check_version(version))
    if lake.exists(f"{model_dir}/{CONFIG_FILE}"):
        raise FileExistsError(f"{lake.uri(model_dir)} already holds an exported ranker {version!r}")
    ranker = result.ranker
    lake.write_bytes(f"{model_dir}/{MODEL_FILE}", ranker.booster.model_to_string().encode())
    lake.write_json(f"{model_dir}/{FEATURES_FILE}", list(ranker.feature_names))
    lake.write_json(f"{model_dir}/{METRICS_FILE}", {**result.metrics, "version": version})
    uri = seal_export(
        lake,
        RANKER,
        version,
        {
            "kind": RANKER,
            "version": version,
            "format_version": FORMAT_VERSION,
            "retrieval_depth": ranker.retrieval_depth,
            "num_threads": ranker.num_threads,
            "num_trees": ranker.booster.num_trees(),
            "lightgbm_version": lgb.__version__,
            "ranker": result.config.model_dump(),
            "params": result.params,
            "importance": result.importance,
        },
    )
    log.info("exported ranker %s to %s", version, uri)
    return uri


def load_ranker(lake: Lake, version: str) -> Ranker:
    """Read the exported ranker ``version`` from the lake.

    Raises:
        ValueError: a malformed version name, or a format this code does not read.
        pipelines.training.registry.MissingExportError: no complete export of ``version``.
        pipelines.core.lake.CorruptArtifactError: a file of the export is corrupt (checked before
            LightGBM reads it).
        FeatureMismatchError: the stored feature list disagrees with the model file.
    """
    model_dir = LakePaths.model_dir(RANKER, check_version(version))
    saved = open_export(lake, RANKER, version)
    if saved.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{lake.uri(model_dir)}/{CONFIG_FILE}: format_version {saved.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    metrics = lake.read_json(f"{model_dir}/{METRICS_FILE}")
    metrics.pop("version", None)
    return Ranker(
        lgb.Booster(model_str=lake.read_bytes(f"{model_dir}/{MODEL_FILE}").decode()),
        lake.read_json(f"{model_dir}/{FEATURES_FILE}"),
        retrieval_depth=int(saved["retrieval_depth"]),
        num_threads=int(saved["num_threads"]),
        metrics=metrics,
    )
