"""Run parameters: per-run choices a user makes when triggering a DAG or running a CLI command.

Each parameter is declared once here. The Airflow side turns it into a typed ``Param`` of the DAGs that
offer it, the command line into a ``--flag`` of the commands that offer it, and
:func:`overrides_from_params` into a settings override (for parameters that override a setting).

This module imports nothing but the standard library: DAG files read it at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class RunParam:
    """One run parameter.

    Attributes:
        name: the param name in the DAG trigger form and ``conf``; the CLI flag is ``--name-with-dashes``.
        kind: ``integer``, ``boolean`` or ``date`` (``YYYY-MM-DD``).
        title: the trigger form's label.
        description: what it does, and what leaving it empty means.
        setting: the settings field it overrides (a path into ``Settings``); None for parameters the
            runtime reads itself.
        default: the value when not given; None means "as configured".
        minimum: the smallest allowed integer.
        maximum: the largest allowed integer.
    """

    name: str
    kind: Literal["integer", "boolean", "date"]
    title: str
    description: str
    setting: tuple[str, ...] | None = None
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


RUN_DATE = RunParam(
    "run_date",
    "date",
    "Run date",
    "Day to process (YYYY-MM-DD). Empty: the run's logical date (the nightly run a features run "
    "starts has that features day).",
)
FORCE_RETRAIN = RunParam(
    "force_retrain",
    "boolean",
    "Force retrain",
    "Train even if the champion was trained on data up to the same day.",
    setting=("force_retrain",),
    default=False,
)
NUM_SHARDS = RunParam(
    "num_shards",
    "integer",
    "User shards",
    "Mapped candidate tasks for this run (1-256). Empty: candidates.num_shards.",
    setting=("candidates", "num_shards"),
    minimum=1,
    maximum=256,
)
TOP_K = RunParam(
    "top_k",
    "integer",
    "Candidates per user",
    "Published candidates per user (1-1000). Empty: candidates.top_k.",
    setting=("candidates", "top_k"),
    minimum=1,
    maximum=1000,
)
DRY_RUN_USERS = RunParam(
    "dry_run_users",
    "integer",
    "Dry-run user sample",
    "Score only a seeded sample of this many users and publish nothing. Empty: every user.",
    setting=("dry_run_users",),
    minimum=1,
)
USE_CURRENT_SYSTEM = RunParam(
    "use_current_system",
    "boolean",
    "Serve the current system",
    "Serve the current system champion. Off: the system in force on the run date (the latest promotion "
    "trained on data up to it), so a past night is served as it was.",
    setting=("use_current_system",),
    default=False,
)
SKIP_DIGESTS = RunParam(
    "skip_digests",
    "boolean",
    "Skip digests",
    "Publish candidates but render no digest e-mails.",
    default=False,
)

RUN_PARAMS: tuple[RunParam, ...] = (
    RUN_DATE,
    FORCE_RETRAIN,
    NUM_SHARDS,
    TOP_K,
    DRY_RUN_USERS,
    USE_CURRENT_SYSTEM,
    SKIP_DIGESTS,
)


def overrides_from_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Nested settings overrides from run params; params left empty (None) and unknown names are left out."""
    overrides: dict[str, Any] = {}
    for param in RUN_PARAMS:
        value = (params or {}).get(param.name)
        if param.setting is None or value is None:
            continue
        target = overrides
        for key in param.setting[:-1]:
            target = target.setdefault(key, {})
        target[param.setting[-1]] = value
    return overrides
