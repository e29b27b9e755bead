"""The candidate loop of a search: over-fetch from the index, re-rank, widen until ``k`` survive.

The re-ranker drops candidates (other people's private images, copies of the query,
near-duplicates, vanished files), so a search asks the index for more than ``k`` and asks
again, four times as many, while too few survive — bounded by ``max_candidates`` and by a
deadline, so one query can never scan the whole index or run for ever. The response's
``stop_reason`` says which bound ended the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .caches import HashCache, VectorCache
from .neighbours import NeighbourService
from .rerank import ReRanker, Result
from .responses import SearchResponse, StageTimer, StopReason
from .store import PlatformStore

__all__ = ["CandidateSearch"]


@dataclass
class CandidateSearch:
    """Ranks a query vector over ``neighbours`` with ``reranker``, examining at most
    ``max_candidates`` candidates and widening no further after ``deadline_ms``."""

    neighbours: NeighbourService
    reranker: ReRanker
    store: PlatformStore
    vectors: VectorCache
    hashes: HashCache
    max_candidates: int
    deadline_ms: float

    def rank(
        self, query: np.ndarray, k: int, user_id: int | None, query_id: int | None, timer: StageTimer
    ) -> SearchResponse:
        """Over-fetch, re-rank, widen (x4) until ``k`` survive — within ``max_candidates`` and the deadline."""
        n_index = len(self.neighbours)
        cap = min(n_index, self.max_candidates)
        fetch = min(cap, max(4 * k, k + 40))
        while True:
            scores, ids = self.neighbours.search(query, fetch)
            timer.lap("search")
            results, dropped = self._rerank(ids, scores, k, user_id, query_id)
            timer.lap("rerank")
            elapsed = (time.perf_counter() - timer.start) * 1000.0
            stop: StopReason | None = (
                "k_results" if len(results) >= k
                else "index_exhausted" if fetch >= n_index
                else "candidate_cap" if fetch >= cap
                else "deadline" if elapsed >= self.deadline_ms
                else None
            )  # fmt: skip
            if stop is not None:
                return SearchResponse(results, timer.finish(), dropped, len(ids), stop)
            fetch = min(cap, fetch * 4)

    def _rerank(
        self, ids: np.ndarray, scores: np.ndarray, k: int, user_id: int | None, query_id: int | None
    ) -> tuple[list[Result], dict[str, int]]:
        """The re-ranker over these candidates; a result whose file vanished is dropped, never a 500."""
        meta = self.store.image_meta(ids.tolist())
        missing = self.store.missing_objects(meta)
        for _ in range(3):
            try:
                return self.reranker.rerank(
                    ids, scores, k=k, meta=meta, requester_id=user_id, query_image_id=query_id,
                    vectors=self.vectors.get, hashes=self.hashes.get, missing=missing,
                )  # fmt: skip
            except FileNotFoundError:  # deleted between the check and the read: check again
                missing = self.store.missing_objects(meta)
        raise RuntimeError("object files keep disappearing during a search")
