"""The re-ranking service: business rules applied to the nearest-neighbour candidates.

Candidates arrive best first. A candidate is dropped when it is the query itself, hidden
from the requester (:func:`~vs_lib.serving.access.hidden_reason`: unknown, another user's
private image, flagged), or an exact or near duplicate of a result already kept. The
order of the survivors is the order of their scores; the re-ranker never reorders.

Near-duplicates: perceptual hashes within ``DUP_HAMMING`` bits (of 64). An embedding rule
(cosine >= ``dup_cosine``) is available but off by default: an encoder trained to pull a
class together puts distinct products as close as copies (notebook 08 measures both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .access import ImageMeta, hidden_reason
from .hashing import hamming

DUP_HAMMING: int | None = 2
DUP_COSINE: float | None = None
DROP_REASONS = ("query", "private", "flagged", "unknown", "duplicate")

VectorsFn = Callable[[Sequence[int]], np.ndarray]  # ids -> (n, d) float32 L2-normalised
HashesFn = Callable[[Sequence[int]], np.ndarray]  # ids -> (n,) uint64 perceptual hashes


@dataclass(frozen=True)
class Result:
    """One ranked result: ``rank`` counts from 1, ``score`` is the cosine similarity to the query."""

    image_id: int
    score: float
    rank: int
    tags: str = ""


class ReRanker:
    """Business rules on a candidate list; ``None`` switches a duplicate test off."""

    def __init__(self, dup_cosine: float | None = DUP_COSINE, dup_hamming: int | None = DUP_HAMMING):
        self.dup_cosine = dup_cosine
        self.dup_hamming = dup_hamming

    def rerank(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        *,
        k: int,
        meta: Mapping[int, ImageMeta],
        requester_id: int | None,
        query_image_id: int | None = None,
        vectors: VectorsFn | None = None,
        hashes: HashesFn | None = None,
    ) -> tuple[list[Result], dict[str, int]]:
        """At most ``k`` results from candidates ``ids`` (``(n,)`` int64, best first) and the drop counts.

        ``meta`` holds the rows of the candidates (an id missing from it is unknown). When the
        query is a platform image (``query_image_id``), copies of it are dropped too: the
        requester already has that picture. A file query keeps its copies' first instance.
        """
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.asarray(scores)
        dropped = dict.fromkeys(DROP_REASONS, 0)
        passing: list[int] = []  # positions in `ids` that pass the visibility rules
        for pos, i in enumerate(ids.tolist()):
            if query_image_id is not None and i == query_image_id:
                dropped["query"] += 1
                continue
            reason = hidden_reason(meta.get(i), requester_id, as_result=True)
            if reason is not None:
                dropped[reason] += 1
                continue
            passing.append(pos)
        # row 0 of `look` is the query when it is a platform image, so its copies count as duplicates
        head = [int(query_image_id)] if query_image_id is not None else []
        look = head + ids[passing].tolist()
        same = self._duplicates(look, vectors, hashes) if passing else None
        kept: list[int] = list(range(len(head)))  # rows of `look` kept so far
        for j in range(len(head), len(look)):
            if len(kept) - len(head) >= k:
                break
            if same is not None and kept and same[j, kept].any():
                dropped["duplicate"] += 1
                continue
            kept.append(j)
        results = []
        for rank, j in enumerate(kept[len(head) :], start=1):
            image_id = look[j]
            score = float(scores[passing[j - len(head)]])
            results.append(Result(image_id, score, rank, meta[image_id].tags or ""))
        return results, dropped

    def _duplicates(self, ids: list[int], vectors: VectorsFn | None, hashes: HashesFn | None) -> np.ndarray | None:
        """``(n, n)`` bool: ``[a, b]`` when images ``ids[a]`` and ``ids[b]`` are duplicates by any active test."""
        n = len(ids)
        same = np.zeros((n, n), dtype=bool)
        active = False
        if vectors is not None and self.dup_cosine is not None:
            vec = vectors(ids)
            same |= (vec @ vec.T) >= self.dup_cosine
            active = True
        if hashes is not None and self.dup_hamming is not None:
            h = hashes(ids)
            same |= hamming(h[:, None], h[None, :]) <= self.dup_hamming
            active = True
        return same if active else None
