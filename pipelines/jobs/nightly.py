"""Nightly serving jobs: inputs snapshot, item embeddings, index, candidate shards and their publication."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.core.context import RunContext


def export_inputs(ctx: RunContext) -> dict[str, Any]:
    """Snapshot the serving inputs of ``ds`` into the lake (the first task of a night: a dry run clears
    its scratch folder here)."""
    from pipelines.core.lake import ScratchLake
    from pipelines.serving import inputs

    if isinstance(ctx.lake, ScratchLake):
        ctx.lake.clear()
    with ctx.warehouse() as warehouse:
        return inputs.export_inputs(warehouse, ctx.lake, ctx.ds, ctx.settings)


def embed_items(ctx: RunContext) -> dict[str, Any]:
    """Batch-predict the champion item tower over the catalog of ``ds``."""
    from pipelines.serving import embeddings

    return embeddings.embed_items(ctx.lake, ctx.ds, ctx.settings)


def build_index(ctx: RunContext) -> dict[str, Any]:
    """Build and recall-check the ScaNN index of ``ds``."""
    from pipelines.serving import index_store

    return index_store.index_items(ctx.lake, ctx.ds, ctx.settings)


def plan_shards(ctx: RunContext) -> list[dict[str, Any]]:
    """One work item per candidate shard of ``ds``."""
    from pipelines.serving import shards

    return shards.plan_shards(ctx.lake, ctx.ds, ctx.settings)


def candidates_for_shard(ctx: RunContext, shard: int, num_shards: int, staging: str) -> dict[str, Any]:
    """Compute one shard's candidate lists into the staging folder."""
    from pipelines.serving import shards

    return shards.candidates_for_shard(ctx.lake, ctx.ds, shard, num_shards, staging, ctx.settings)


def publish_candidates(ctx: RunContext, staging: str, shard_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish ``ds``'s candidates once every shard is written."""
    from pipelines.serving import shards

    return shards.publish_candidates(ctx.lake, ctx.ds, staging, list(shard_results), ctx.settings)
