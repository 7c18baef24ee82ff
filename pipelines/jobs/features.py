"""Feature jobs: the feature SQL of one date."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext


def build_features(ctx: RunContext, quiet_day: bool = False) -> dict[str, Any]:
    """Build the feature tables of ``ctx.ds`` (quality gate included); ``quiet_day`` builds a day without
    events (a history build over imported data), which is refused otherwise."""
    from pipelines.data.features import build_features as build

    with ctx.warehouse() as warehouse:
        report = build(warehouse, ctx.lake, ctx.ds, ctx.settings, quiet_day=quiet_day)
    return report.to_dict()
