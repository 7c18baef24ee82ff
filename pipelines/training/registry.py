"""Model registry: version names and the champion pointer of every kind (``two_tower``, ``ranker``, ``als``,
and ``system``, the served system that names the others).

A trained model is exported to ``models/<kind>/<version>/``; its ``config.json``, written last by
:func:`seal_export`, marks the export complete and records the SHA-256 of every other file, which
:func:`open_export` verifies before any loader touches them. Promotion replaces
``models/<kind>/champion.json`` atomically, conditioned on the pointer generation read before deciding,
so two runs promoting at once cannot both win silently. Which challenger deserves it is decided by
replaying its lists (``pipelines.evaluation``), not here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from typing import Any

from pipelines.core.errors import PermanentError
from pipelines.core.lake import CorruptArtifactError, Lake, PublishConflict
from pipelines.core.paths import LakePaths

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{8}T\d{12}Z-[0-9a-f]{8}$")
_last_stamp: dt.datetime | None = None


def new_version(ds: dt.date, config: dict[str, Any], now: dt.datetime | None = None) -> str:
    """A version name that sorts by run date, then creation time, and names the config it was trained with.

    Form: ``<ds>-<UTC YYYYmmddTHHMMSSffffff>Z-<first 8 hex of sha256(config json)>``, e.g.
    ``2026-11-22-20261123T021501123456Z-1f2e3d4c``. Clock-stamped versions never repeat within a process.

    Args:
        ds: the run date the model was trained for.
        config: the training configuration (hashed).
        now: the creation time; the clock when None.

    Raises:
        ValueError: ``ds`` is not a date.
    """
    if now is None:
        global _last_stamp
        now = dt.datetime.now(dt.UTC)
        # Two calls in the same microsecond would collide; step past the last stamp of this process.
        if _last_stamp is not None and now <= _last_stamp:
            now = _last_stamp + dt.timedelta(microseconds=1)
        _last_stamp = now
    now = now.astimezone(dt.UTC)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{ds.isoformat()}-{now:%Y%m%dT%H%M%S%f}Z-{digest}"


def check_version(version: str) -> str:
    """Return ``version`` unchanged.

    Raises:
        ValueError: it is not of the form produced by :func:`new_version`.
    """
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ValueError(
            f"model version must look like 2026-11-22-20261123T021501123456Z-1f2e3d4c, got {version!r}"
        )
    return version


CONFIG_FILE = "config.json"


class MissingExportError(PermanentError, FileNotFoundError):
    """A model version has no complete export (its ``config.json`` is missing)."""


def seal_export(lake: Lake, kind: str, version: str, config: dict[str, Any]) -> str:
    """Complete the export of ``kind`` ``version``: write ``config.json`` last, with the checksum of every
    other file of the version folder.

    Returns:
        The URI of the version folder.
    """
    model_dir = LakePaths.model_dir(kind, version)
    files = [name for name in lake.find(model_dir) if name != CONFIG_FILE]
    checksums = {name: lake.checksum(f"{model_dir}/{name}") for name in files}
    lake.write_json(f"{model_dir}/{CONFIG_FILE}", {**config, "checksums": checksums})
    return lake.uri(model_dir)


def open_export(lake: Lake, kind: str, version: str) -> dict[str, Any]:
    """The ``config.json`` of a complete export of ``kind`` ``version``, every file checked first.

    Raises:
        ValueError: ``version`` is malformed.
        MissingExportError: the export is incomplete (``config.json`` missing).
        CorruptArtifactError: ``config.json`` is not JSON, or a file is missing or differs from its
            recorded checksum (the message names the file).
    """
    model_dir = LakePaths.model_dir(kind, check_version(version))
    rel = f"{model_dir}/{CONFIG_FILE}"
    if not lake.exists(rel):
        raise MissingExportError(
            f"no complete {kind} export at {lake.uri(model_dir)} ({CONFIG_FILE} missing)"
        )
    try:
        config = lake.read_json(rel)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptArtifactError(f"{lake.uri(rel)} is not valid JSON ({exc})") from exc
    if "checksums" not in config:
        raise CorruptArtifactError(f"{lake.uri(rel)} records no checksums: export {kind} {version} again")
    lake.verify(model_dir, config["checksums"])
    return config


def list_versions(lake: Lake, kind: str) -> list[str]:
    """Completely exported versions of ``kind``, oldest first."""
    return [
        name
        for name in lake.ls(f"models/{kind}")
        if _VERSION_RE.match(name) and lake.exists(f"{LakePaths.model_dir(kind, name)}/{CONFIG_FILE}")
    ]


def current_champion(lake: Lake, kind: str) -> dict[str, Any] | None:
    """The champion pointer of ``kind`` (``version``, ``metric``, ``value``, ``metrics``, ...), or None."""
    return lake.read_pointer(LakePaths.champion(kind)).content


def champion_version(lake: Lake, kind: str) -> str | None:
    """The version the champion pointer of ``kind`` names, or None before the first promotion."""
    champion = current_champion(lake, kind)
    return champion["version"] if champion else None


def promote(lake: Lake, kind: str, content: dict[str, Any], expected_champion: str | None) -> None:
    """Make ``content["version"]`` the champion of ``kind``, unless the champion changed meanwhile.

    The gate that decides lives with the evaluation; this only swaps the pointer, conditioned on the
    pointer generation read here, after checking that the champion is still ``expected_champion``.

    Raises:
        PublishConflict: the champion is no longer ``expected_champion`` (another run promoted).
    """
    pointer = lake.read_pointer(LakePaths.champion(kind))
    current = pointer.content["version"] if pointer.content else None
    if current != expected_champion:
        raise PublishConflict(
            f"{kind} champion is {current!r}, not {expected_champion!r} as when the challenger was judged"
        )
    record = {
        **content,
        "kind": kind,
        "previous_version": current,
        "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    lake.write_pointer(LakePaths.champion(kind), record, if_generation_match=pointer.generation)
    log.info("%s champion: %s (was %s)", kind, content["version"], current)
