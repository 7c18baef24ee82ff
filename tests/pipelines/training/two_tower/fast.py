"""The small, fast two-tower config the two-tower tests train with."""

from __future__ import annotations

from pipelines.core.model_settings import TwoTowerConfig

FAST = TwoTowerConfig(batch_size=128, epochs=4, mixed_negatives=64, logq_correction=True)
