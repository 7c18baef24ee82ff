"""The served system: which retriever, models and list stages the nightly job uses to make the lists.

A system is chosen by replaying candidate systems on past nights (``pipelines.evaluation``) and promoted in
the registry as the ``system`` champion. The night of ``ds`` serves the system in force on ``ds``: the
latest promoted system trained on data up to ``ds`` at most, from the promotion history (never the wall
clock), so re-running a past night serves what served it; a run may ask for the current champion instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake
from pipelines.core.model_settings import ALS_RETRIEVER, RETRIEVERS, TWO_TOWER_RETRIEVER
from pipelines.core.paths import SYSTEM
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
        popularity_prior: ``beta`` of the two-tower's retrieval score ``cos / T + beta * log q_j``, with
            ``q_j`` the post's recent engagement share (:mod:`pipelines.serving.prior`); 0 retrieves by
            the towers alone.
        blend_retriever: a second retriever whose lists are fused with the first's by weighted reciprocal
            rank (:mod:`pipelines.serving.blend`), with its own fields above (``als_version``,
            ``popularity_window_days``, ``knn_neighbors``); None retrieves with ``retriever`` alone.
        blend_weight: the second retriever's weight ``w`` in the blend, in (0, 1).
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
    popularity_prior: float = 0.0
    blend_retriever: str | None = None
    blend_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {self.retriever!r}")
        if (self.retriever == TWO_TOWER_RETRIEVER or self.diversify) and not self.two_tower_version:
            raise ValueError("a two-tower or diversified system needs its two_tower_version")
        if ALS_RETRIEVER in (self.retriever, self.blend_retriever) and not self.als_version:
            raise ValueError("an ALS system needs its als_version")
        if self.blend_retriever is not None:
            if self.blend_retriever not in RETRIEVERS or self.blend_retriever == self.retriever:
                raise ValueError(
                    f"blend_retriever must be another of {RETRIEVERS}, got {self.blend_retriever!r}"
                )
            if not 0 < self.blend_weight < 1:
                raise ValueError(f"blend_weight must lie strictly between 0 and 1, got {self.blend_weight}")
        elif self.blend_weight:
            raise ValueError("a blend_weight needs a blend_retriever")
        if self.popularity_prior and self.retriever != TWO_TOWER_RETRIEVER:
            raise ValueError("a popularity prior weighs two-tower retrieval scores; this system has none")

    @property
    def label(self) -> str:
        """A short human name: the retriever, then the stages it adds."""
        parts = [self.retriever.replace("_", "-")]
        if self.popularity_prior:
            parts.append(f"popularity prior {self.popularity_prior:g}")
        if self.blend_retriever is not None:
            parts.append(f"blend {self.blend_retriever.replace('_', '-')} {self.blend_weight:g}")
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

    @property
    def retrievers(self) -> tuple[str, ...]:
        """The retriever, then the blended one if any."""
        return (self.retriever,) if self.blend_retriever is None else (self.retriever, self.blend_retriever)

    def to_json(self) -> dict[str, Any]:
        """The fields; a system without a blend leaves the blend's out, as systems promoted before blends
        existed were recorded."""
        data = asdict(self)
        if self.blend_retriever is None:
            del data["blend_retriever"], data["blend_weight"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServedSystem:
        return cls(**data)


class NoChampionError(PermanentError):
    """No system was promoted for the night asked for: train before the nightly job."""


NO_CHAMPION = "no served system yet: run the training DAG (or `python -m pipelines train`)"
AS_OF = "as_of"
CURRENT = "current"


@dataclass(frozen=True)
class SystemInForce:
    """The system a night serves, which promotion it is and why it was picked.

    Attributes:
        system: the system.
        version: its promoted version.
        trained_through: the run date whose data its models were trained on.
        rule: ``as_of`` (the latest promotion trained on data up to the night) or ``current`` (the
            champion now, asked for by the run).
        reason: one sentence saying so, for the facts and the report.
    """

    system: ServedSystem
    version: str
    trained_through: dt.date
    rule: Literal["as_of", "current"]
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The choice without the system itself (facts and manifests carry that beside it)."""
        return {
            "version": self.version,
            "trained_through": self.trained_through.isoformat(),
            "rule": self.rule,
            "reason": self.reason,
        }


def served_system(lake: Lake, ds: dt.date, use_current: bool = False) -> SystemInForce:
    """The system the night of ``ds`` serves.

    Args:
        lake: the lake holding the registry.
        ds: the night.
        use_current: serve the current champion whatever ``ds`` is, instead of the system in force on
            ``ds``.

    Raises:
        NoChampionError: no system was ever promoted, or (as of ``ds``) none was trained on data up to
            ``ds``.
    """
    history = registry.promotion_history(lake, SYSTEM)
    if not history:
        raise NoChampionError(NO_CHAMPION)
    if use_current:
        record, rule = registry.current_champion(lake, SYSTEM) or history[-1], CURRENT
        why = "the current champion, as the run asked (use_current_system)"
    else:
        in_force = [r for r in history if registry.trained_through(r["version"]) <= ds]
        if not in_force:
            first = min(registry.trained_through(r["version"]) for r in history)
            raise NoChampionError(
                f"no system was in force on {ds}: the earliest promoted system was trained on data up to "
                f"{first}; train for {ds} or earlier, or set use_current_system to serve the current one"
            )
        record, rule = in_force[-1], AS_OF
        why = f"in force on {ds} (the latest promotion trained on data up to {ds})"
    trained = registry.trained_through(record["version"])
    return SystemInForce(
        ServedSystem.from_json(record["system"]),
        record["version"],
        trained,
        rule,
        f"{why}: {record['version']}",
    )
