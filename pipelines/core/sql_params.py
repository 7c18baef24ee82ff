"""The typed values the SQL in ``sql/`` is templated with besides ``ds``, from the settings."""

from __future__ import annotations

from pipelines.core.settings import Settings


def sql_params(settings: Settings) -> dict[str, int]:
    """Windows and sizes every feature model and serving query reads (``{{ params.<name> }}``)."""
    return {
        "max_future_skew_minutes": settings.quality.max_future_skew_minutes,
        "max_past_years": settings.quality.max_past_years,
        "lookback_days": settings.features.lookback_days,
        "short_window_days": settings.features.short_window_days,
        "affinity_tags": settings.features.affinity_tags,
        "history_length": settings.two_tower.history_length,
        "history_days": settings.features.history_days,
        "seen_horizon_days": settings.candidates.seen_horizon_days or 0,
    }
