"""Wall seconds per serving stage, summed over user batches, with the busy time of work that runs ahead in
the background."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class StageTimer:
    """Wall seconds per stage, summed over batches.

    ``seconds`` add up to the wall time of what was timed. Work that runs ahead in the background (the
    next batch's user tower and retrieval) counts there only for the time the pipeline waited for it;
    its full busy time is in ``overlapped``.
    """

    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    overlapped: dict[str, float] = dataclasses.field(default_factory=dict)

    def __call__(self, name: str) -> _Timing:
        return _Timing(self.seconds, name)

    def background(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed into ``overlapped[name]``."""

        def timed(*args: Any) -> Any:
            with _Timing(self.overlapped, name):
                return fn(*args)

        return timed


class _Timing:
    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self.seconds, self.name = seconds, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + elapsed
