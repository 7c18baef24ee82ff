"""Named sizes of the synthetic world (``--scale``) and the configuration a scale and a regime give."""

from __future__ import annotations

from pipelines.core.settings import WorldConfig
from pipelines.data.world.regimes import REGIMES

SCALES: dict[str, dict[str, int | float]] = {
    "tiny": {"n_users": 200, "n_items": 300, "n_days": 21, "impressions_per_active_user_day": 10},
    "default": {},
    "medium": {"n_users": 50_000, "n_items": 50_000, "n_days": 28},
    "large": {
        "n_users": 1_000_000,
        "n_items": 1_000_000,
        "n_days": 7,
        "daily_active_fraction": 0.1,
        "impressions_per_active_user_day": 10,
    },
}


def world_config(scale: str, base: WorldConfig, regime: str | None = None) -> WorldConfig:
    """``base`` with the sizes of a named scale (tiny, default, medium, large) and a regime's sizes.

    The regime's window length and post count (see :mod:`pipelines.data.world.regimes`) replace the
    scale's, except for the fields set explicitly in ``base`` (e.g. by ``NIGHTFEED_WORLD__N_DAYS``).

    Args:
        regime: the regime to use (default: ``base.regime``).

    Raises:
        ValueError: ``scale`` is not one of :data:`SCALES` or ``regime`` not a known regime.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    if regime is not None:
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; expected one of {sorted(REGIMES)}")
        base = base.model_copy(update={"regime": regime})
    chosen, profile = base.model_fields_set, REGIMES[base.regime]
    sizes = dict(SCALES[scale])
    if profile.n_days is not None and "n_days" not in chosen:
        sizes["n_days"] = profile.n_days
    if profile.items_factor != 1.0 and "n_items" not in chosen:
        sizes["n_items"] = round(sizes.get("n_items", base.n_items) * profile.items_factor)
    return base.model_copy(update=sizes)
