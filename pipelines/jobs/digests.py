"""Digest jobs: plan one render per candidates shard, render each, publish them together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from pipelines.core.context import RunContext


def _digest_inputs(ctx: RunContext) -> tuple[pa.Table, pa.Table]:
    """The users (``profiles``) and ``items`` serving inputs of ``ds`` that digests are made from."""
    from pipelines.serving.inputs import read_input

    return read_input(ctx.lake, ctx.ds, "profiles"), read_input(ctx.lake, ctx.ds, "items")


def plan_digests(ctx: RunContext) -> list[dict[str, Any]]:
    """One digest work item per published candidates shard of ``ds`` (the nightly DAG maps over them)."""
    from pipelines.delivery.digests import shards

    return shards.plan_digests(ctx.lake, ctx.ds, dry_run=bool(ctx.settings.dry_run_users))


def render_digests(ctx: RunContext, shard: int, num_shards: int, staging: str | None) -> dict[str, Any]:
    """Render one shard's digests into the staging folder (a sample, written nowhere, in a dry run)."""
    from pipelines.delivery.digests import shards

    result = shards.render_digest_shard(
        ctx.lake,
        ctx.ds,
        shard,
        num_shards,
        staging,
        *_digest_inputs(ctx),
        ctx.settings.digest,
        dry_run_users=ctx.settings.dry_run_users,
    )
    summary = result.summary()
    summary["sample"] = [m.message_id for m in result.messages]
    return summary


def publish_digests(
    ctx: RunContext, staging: str | None, shard_results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Publish ``ds``'s digests once every shard is rendered (nothing in a dry run)."""
    from pipelines.delivery.digests import shards

    if ctx.settings.dry_run_users or staging is None:
        summary = shards.summarise_shards(ctx.ds, list(shard_results), dry_run=True).to_dict()
        samples = [message for r in shard_results for message in r.get("sample", [])]
        return {**summary, "published": False, "sample": samples, "shards": list(shard_results)}
    report = shards.publish_digests(ctx.lake, ctx.ds, staging, list(shard_results), ctx.settings.digest)
    return report.to_dict()
