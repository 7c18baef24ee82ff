"""Model registry: version names, the champion pointer and the blessing gate, for every kind of model.

A trained model is exported to ``models/<kind>/<version>/`` (its ``config.json`` written last marks the
export complete). It becomes the one the nightly job serves only when it is *blessed*: its metric on this
run's hold-out is at least the absolute ``floor`` and at least the champion's metric ON THE SAME HOLD-OUT
minus ``tolerance`` (the first model of a kind needs only the floor). Promotion replaces
``models/<kind>/champion.json`` atomically, conditioned on the pointer generation read before deciding, so
two runs promoting at once cannot both win silently. A rejected model leaves the champion untouched.

Every decision, promoted or not, is also written to ``models/<kind>/<version>/decision.json`` for the run
report. Nothing here knows what a model is; the caller supplies the metrics.

Reads and writes: ``models/<kind>/champion.json`` and ``models/<kind>/<version>/decision.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import re
from typing import Any

from pipelines.core.lake import Lake, PublishConflict
from pipelines.core.paths import LakePaths
from pipelines.core.settings import BlessingConfig

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{8}T\d{12}Z-[0-9a-f]{8}$")
_last_stamp: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of the blessing gate for one challenger."""

    kind: str
    version: str
    promoted: bool
    reason: str
    metric: str
    value: float
    champion_version: str | None
    champion_value: float | None
    floor: float
    tolerance: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def list_versions(lake: Lake, kind: str) -> list[str]:
    """Completely exported versions of ``kind``, oldest first."""
    return [
        name
        for name in lake.ls(f"models/{kind}")
        if _VERSION_RE.match(name) and lake.exists(f"{LakePaths.model_dir(kind, name)}/config.json")
    ]


def current_champion(lake: Lake, kind: str) -> dict[str, Any] | None:
    """The champion pointer of ``kind`` (``version``, ``metric``, ``value``, ``metrics``, ...), or None."""
    return lake.read_pointer(LakePaths.champion(kind)).content


def champion_version(lake: Lake, kind: str) -> str | None:
    """The version the champion pointer of ``kind`` names, or None before the first promotion."""
    champion = current_champion(lake, kind)
    return champion["version"] if champion else None


def promote_if_blessed(
    lake: Lake,
    kind: str,
    version: str,
    metrics: dict[str, float],
    champion_metrics_on_same_holdout: dict[str, float] | None,
    config: BlessingConfig,
    champion_version: str | None = None,
) -> Decision:
    """Make ``version`` the champion of ``kind`` if it passes the gate.

    Args:
        lake: where the models live.
        kind: model kind, e.g. ``two_tower`` or ``ranker``.
        version: the exported challenger.
        metrics: the challenger's metrics on this run's hold-out.
        champion_metrics_on_same_holdout: the current champion re-evaluated on the SAME hold-out; None only
            when there is no champion yet.
        config: the metric name, the tolerance and the floor.
        champion_version: the champion version those metrics belong to; when given and the pointer names
            another version by now, the comparison is stale and :class:`PublishConflict` is raised.

    Returns:
        The decision; ``promoted`` says whether the pointer now names ``version``.

    Raises:
        ValueError: ``config.metric`` is missing from the metrics, a champion exists but no champion
            metrics were given, or the challenger was not exported.
        PublishConflict: the champion changed after it was evaluated or while deciding.
    """
    check_version(version)
    if not lake.exists(f"{LakePaths.model_dir(kind, version)}/config.json"):
        raise ValueError(
            f"{kind} {version} has no complete export under {lake.uri(LakePaths.model_dir(kind, version))}"
        )
    value = _metric(metrics, config.metric, f"{kind} {version}")
    pointer = lake.read_pointer(LakePaths.champion(kind))
    champion = pointer.content
    current = champion["version"] if champion else None
    if champion_version is not None and champion_version != current:
        raise PublishConflict(
            f"{kind} champion is {current!r} but the metrics given are of {champion_version!r}; re-evaluate"
        )
    champion_value = None
    if champion is not None:
        if champion_metrics_on_same_holdout is None:
            raise ValueError(
                f"{kind} has champion {current}; re-evaluate it on this hold-out and pass its metrics"
            )
        champion_value = _metric(
            champion_metrics_on_same_holdout, config.metric, f"{kind} champion {current}"
        )

    def decide(promoted: bool, reason: str) -> Decision:
        return Decision(
            kind=kind,
            version=version,
            promoted=promoted,
            reason=reason,
            metric=config.metric,
            value=value,
            champion_version=current,
            champion_value=champion_value,
            floor=config.floor,
            tolerance=config.tolerance,
        )

    if current == version:
        decision = decide(False, f"{version} is already the champion")
    elif not math.isfinite(value):
        decision = decide(False, f"{config.metric} is {value}, not a number")
    elif value < config.floor:
        decision = decide(False, f"{config.metric} {value:.4f} is below the floor {config.floor:.4f}")
    elif champion_value is not None and value < champion_value - config.tolerance:
        decision = decide(
            False,
            f"{config.metric} {value:.4f} trails champion {current} ({champion_value:.4f}) "
            f"by more than the tolerance {config.tolerance:.4f}",
        )
    elif champion_value is None:
        decision = decide(
            True, f"first {kind} model: {config.metric} {value:.4f} >= floor {config.floor:.4f}"
        )
    else:
        decision = decide(
            True,
            f"{config.metric} {value:.4f} >= champion {current} ({champion_value:.4f}) "
            f"- {config.tolerance:.4f} and >= floor {config.floor:.4f}",
        )

    if decision.promoted:
        lake.write_pointer(
            LakePaths.champion(kind),
            {
                "kind": kind,
                "version": version,
                "model_dir": LakePaths.model_dir(kind, version),
                "metric": config.metric,
                "value": value,
                "metrics": metrics,
                "previous_version": current,
                "previous_value_on_same_holdout": champion_value,
                "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
            },
            if_generation_match=pointer.generation,
        )
    lake.write_json(f"{LakePaths.model_dir(kind, version)}/decision.json", decision.to_json())
    log.info(
        "%s %s %s: %s", kind, version, "promoted" if decision.promoted else "not promoted", decision.reason
    )
    return decision


def _metric(metrics: dict[str, float], name: str, whose: str) -> float:
    if name not in metrics:
        raise ValueError(f"{whose} has no metric {name!r}; it has {sorted(metrics)}")
    return float(metrics[name])
