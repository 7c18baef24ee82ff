"""The served system: which retriever, models and list stages the nightly job uses to make the lists.

A system is chosen by replaying candidate systems on past nights (``pipelines.evaluation``) and promoted in
the registry as the ``system`` champion. Until one is promoted, the system is the two-tower champion with
the ranker champion (when there is one) and diversification: what the nightly job served before systems
were chosen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipelines.core.lake import Lake
from pipelines.core.model_settings import ALS_RETRIEVER, RETRIEVERS, TWO_TOWER_RETRIEVER
from pipelines.core.paths import RANKER, SYSTEM, TWO_TOWER
from pipelines.training import registry


@dataclass(frozen=True)
class ServedSystem:
    """One way to make the lists.

    Attributes:
        retriever: ``two_tower`` (user tower + index), ``als`` (folded-in user factors), ``item_knn``
            (similar posts to the user's history) or ``most_popular`` (recent engagement counts).
        two_tower_version: the two-tower model whose item embeddings the lists are diversified with (and
            that retrieves, for ``two_tower``); may be None for an undiversified baseline.
        ranker_version: the LightGBM ranker that re-orders the retrieved posts; None keeps retrieval order.
        als_version: the ALS model, for ``als``.
        diversify: MMR, source and author caps and the exploration slot; False publishes the top posts in
            score order.
        popularity_window_days: the window of ``most_popular`` (None: all history).
        knn_neighbors: similar posts kept per post, for ``item_knn``.
        max_item_age_days: posts older than this are never listed (None: no limit).
        mmr_lambda: the relevance weight of diversification (None: ``diversify.mmr_lambda``).
        retrieval_depth: posts retrieved per user before filtering and ranking (None:
            ``candidates.top_n``).
    """

    retriever: str
    two_tower_version: str | None
    ranker_version: str | None = None
    als_version: str | None = None
    diversify: bool = True
    popularity_window_days: int | None = 7
    knn_neighbors: int = 100
    max_item_age_days: float | None = None
    mmr_lambda: float | None = None
    retrieval_depth: int | None = None

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {self.retriever!r}")
        if (self.retriever == TWO_TOWER_RETRIEVER or self.diversify) and not self.two_tower_version:
            raise ValueError("a two-tower or diversified system needs its two_tower_version")
        if self.retriever == ALS_RETRIEVER and not self.als_version:
            raise ValueError("an ALS system needs its als_version")

    @property
    def label(self) -> str:
        """A short human name: the retriever, then the stages it adds."""
        parts = [self.retriever.replace("_", "-")]
        if self.ranker_version:
            parts.append("ranker")
        if self.retrieval_depth is not None:
            parts.append(f"depth {self.retrieval_depth}")
        if self.diversify:
            parts.append(
                "diversified" + ("" if self.mmr_lambda is None else f" (lambda {self.mmr_lambda:g})")
            )
        if self.max_item_age_days is not None:
            parts.append(f"age<={self.max_item_age_days:g}d")
        return " + ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServedSystem:
        return cls(**data)


def served_system(lake: Lake) -> ServedSystem | None:
    """The system in force: the ``system`` champion, else the model champions; None before any training."""
    champion = registry.current_champion(lake, SYSTEM)
    if champion is not None:
        return ServedSystem.from_json(champion["system"])
    two_tower = registry.champion_version(lake, TWO_TOWER)
    if two_tower is None:
        return None
    return ServedSystem(TWO_TOWER_RETRIEVER, two_tower, registry.champion_version(lake, RANKER))
