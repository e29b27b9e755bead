"""What the search service answers (dataclasses, not loose dicts) and the timer behind their timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from .rerank import Result

StopReason = Literal["k_results", "index_exhausted", "candidate_cap", "deadline"]


@dataclass
class SearchResponse:
    """Ranked results, milliseconds per stage, why candidates were dropped, how many the index
    returned, and why the search stopped looking (``k_results`` when it found ``k``)."""

    results: list[Result]
    timings_ms: dict[str, float]
    dropped: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    stop_reason: StopReason = "k_results"

    @property
    def ids(self) -> list[int]:
        return [r.image_id for r in self.results]

    @property
    def fewer_than_k(self) -> bool:
        """The filters left fewer than ``k`` results among the candidates the search could examine."""
        return self.stop_reason != "k_results"


@dataclass(frozen=True)
class UploadResult:
    """The new image's id and storage key, and milliseconds per stage of the upload."""

    image_id: int
    storage_key: str
    timings_ms: dict[str, float]


class Health(TypedDict):
    """``GET /health``: the service's own figures, no personal field."""

    status: str
    images_indexed: int
    model: str
    fingerprint: str
    dim: int
    index_kind: str


class StageTimer:
    """Milliseconds per named stage, each lap since the previous one; a stage timed twice adds up."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._last) * 1000.0
        self._last = now

    def finish(self) -> dict[str, float]:
        """Every stage and the ``total`` since the timer started, rounded to microseconds."""
        total = (time.perf_counter() - self.start) * 1000.0
        return {**{s: round(v, 3) for s, v in self.ms.items()}, "total": round(total, 3)}
