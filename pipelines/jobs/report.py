"""The report job: the run report of one date from whatever facts the night left."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext


def write_report(ctx: RunContext) -> dict[str, Any]:
    """Publish the run report of ``ds``.

    A missing fact is not a failure (a night without training has no training facts, a dry run publishes
    no candidates): its section says so and the report shows the champion in force instead.

    Raises:
        pipelines.delivery.report.facts.ReportInputError: a fact or published dataset is malformed.
    """
    from pipelines.delivery.report.build import build_report

    return build_report(ctx.lake, ctx.ds).to_dict()
