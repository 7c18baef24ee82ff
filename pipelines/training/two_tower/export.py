"""Export a trained two-tower model to the lake and load its towers back.

Writes ``models/two_tower/<version>/{user_tower,item_tower}/`` SavedModels that take raw string features,
``metrics.json``, ``vocabularies.json`` and ``config.json`` (written last); reads them back.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import tensorflow as tf

from pipelines.core.lake import Lake
from pipelines.core.model_settings import TwoTowerConfig
from pipelines.core.paths import TWO_TOWER, LakePaths
from pipelines.training.registry import CONFIG_FILE, open_export, seal_export
from pipelines.training.two_tower.servers import Towers, build_towers

if TYPE_CHECKING:
    from pipelines.training.two_tower.train import TrainResult

log = logging.getLogger(__name__)


def export_two_tower(result: TrainResult, lake: Lake, version: str) -> str:
    """Save the towers, vocabularies, metrics and config under ``models/two_tower/<version>/``.

    ``config.json`` is written last: a version folder without it is an unfinished export.

    Returns:
        The URI of the version folder.

    Raises:
        FileExistsError: the version was already exported (versions are never overwritten).
    """
    model_dir = LakePaths.model_dir(TWO_TOWER, version)
    if lake.exists(f"{model_dir}/{CONFIG_FILE}"):
        raise FileExistsError(f"{lake.uri(model_dir)} already holds an exported model")
    with tempfile.TemporaryDirectory(prefix="two_tower-") as tmp:
        tf.saved_model.save(result.user_server, f"{tmp}/user_tower")
        tf.saved_model.save(result.item_server, f"{tmp}/item_tower")
        lake.put_dir(f"{tmp}/user_tower", f"{model_dir}/user_tower")
        lake.put_dir(f"{tmp}/item_tower", f"{model_dir}/item_tower")
    lake.write_json(f"{model_dir}/vocabularies.json", result.vocabularies.to_json())
    lake.write_json(f"{model_dir}/metrics.json", {**result.report(), "version": version})
    uri = seal_export(
        lake,
        TWO_TOWER,
        version,
        {
            "kind": TWO_TOWER,
            "version": version,
            "two_tower": result.config.model_dump(),
            "embedding_dim": result.config.embedding_dim,
            "n_train_examples": result.n_train_examples,
        },
    )
    log.info("exported two-tower %s to %s", version, uri)
    return uri


def load_towers(lake: Lake, version: str, cache_dir: str | Path | None = None) -> Towers:
    """Load an exported model's towers; ``embed_users`` / ``embed_items`` take raw tables.

    Args:
        lake: the lake the model was exported to.
        version: the model version.
        cache_dir: where remote models are downloaded (a temporary folder when None); local lakes are read
            in place.

    Raises:
        pipelines.training.registry.MissingExportError: no complete export of ``version``.
        pipelines.core.lake.CorruptArtifactError: a file of the export is corrupt (checked before
            TensorFlow reads it).
    """
    model_dir = LakePaths.model_dir(TWO_TOWER, version)
    saved = open_export(lake, TWO_TOWER, version)
    config = TwoTowerConfig.model_validate(saved["two_tower"])
    if lake.protocol == "file":
        local = Path(lake.path(model_dir))
    else:
        local = Path(cache_dir or tempfile.mkdtemp(prefix="two_tower-")) / version
        lake.get_dir(f"{model_dir}/user_tower", local / "user_tower")
        lake.get_dir(f"{model_dir}/item_tower", local / "item_tower")
    user_server = tf.saved_model.load(str(local / "user_tower"))
    item_server = tf.saved_model.load(str(local / "item_tower"))
    return build_towers(user_server.embed, item_server.embed, config, version, (user_server, item_server))
