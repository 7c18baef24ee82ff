"""Named sizes of the synthetic world (``--scale``) and the configuration they give."""

from __future__ import annotations

from pipelines.core.settings import WorldConfig

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


def world_config(scale: str, base: WorldConfig) -> WorldConfig:
    """``base`` with the sizes of a named scale (tiny, default, medium, large).

    Raises:
        ValueError: ``scale`` is not one of :data:`SCALES`.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    return base.model_copy(update=SCALES[scale])
