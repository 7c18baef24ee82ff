"""Feature jobs: the feature SQL of one date."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext


def build_features(ctx: RunContext) -> dict[str, Any]:
    """Build the feature tables of ``ctx.ds`` (quality gate included)."""
    from pipelines.data.features import build_features as build

    with ctx.warehouse() as warehouse:
        report = build(warehouse, ctx.lake, ctx.ds, ctx.settings)
    return report.to_dict()
