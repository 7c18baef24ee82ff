"""The models a served system names, by kind and version: loaded from the lake once, or handed in
directly (a replayed night serves models trained a moment ago that were never exported)."""

from __future__ import annotations

from typing import Any

from pipelines.core.lake import Lake
from pipelines.core.paths import ALS, RANKER, TWO_TOWER


class ModelStore:
    """Models by ``(kind, version)``; a miss loads the export from the lake (when there is a lake)."""

    def __init__(self, lake: Lake | None, compiled_ranker: bool = True) -> None:
        self.lake = lake
        self.compiled_ranker = compiled_ranker
        self._models: dict[tuple[str, str], Any] = {}

    def put(self, kind: str, version: str, model: Any) -> None:
        """Serve ``model`` as ``kind`` ``version`` without loading it."""
        self._models[(kind, version)] = model

    def get(self, kind: str, version: str) -> Any:
        """The model ``kind`` ``version``.

        Raises:
            FileNotFoundError: not handed in and not exported to the lake.
        """
        key = (kind, version)
        if key not in self._models:
            if self.lake is None:
                raise FileNotFoundError(
                    f"{kind} {version} was not handed in and there is no lake to load it from"
                )
            self._models[key] = self._load(kind, version)
        return self._models[key]

    def _load(self, kind: str, version: str) -> Any:
        assert self.lake is not None
        if kind == TWO_TOWER:
            from pipelines.training.two_tower import load_towers

            return load_towers(self.lake, version)
        if kind == RANKER:
            from pipelines.training.ranker import load_ranker

            ranker = load_ranker(self.lake, version)
            return ranker.compile() if self.compiled_ranker else ranker
        if kind == ALS:
            from pipelines.training.als import load_als

            return load_als(self.lake, version)
        raise ValueError(f"unknown model kind {kind!r}")
