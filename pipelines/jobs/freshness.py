"""The freshness job: fail loudly when what users are served from is older than allowed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext


def check_freshness(ctx: RunContext) -> dict[str, Any]:
    """Check the newest published candidates and digests against ``freshness.max_age_days`` before ds.

    Raises:
        pipelines.delivery.freshness.StaleOutputs: an output is older than allowed or never published.
    """
    from pipelines.delivery.freshness import check_freshness as check

    return check(ctx.lake, ctx.ds, ctx.settings.freshness)
