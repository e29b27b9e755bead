"""The re-ranking service: business rules applied to the nearest-neighbour candidates.

Candidates arrive best first. A candidate is dropped when it is the query itself, hidden
from the requester (:func:`~vs_lib.serving.access.hidden_reason`: unknown, another user's
private image, flagged), its object file is missing, or it is an exact or near duplicate of
a result already kept. The order of the survivors is the order of their scores; the
re-ranker never reorders.

Near-duplicates: perceptual hashes within ``DUP_HAMMING`` bits (of 64). An embedding rule
(cosine >= ``dup_cosine``) is available but off by default: an encoder trained to pull a
class together puts distinct products as close as copies (notebook 08 measures both).

Bounded work: each candidate is compared only with the results kept so far (at most ``k``,
plus the query), and hashes and vectors are fetched for the candidates in chunks as the walk
needs them — memory O(chunk + k), time O(candidates × k), never a candidates × candidates matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .access import ImageMeta, hidden_reason
from .hashing import hamming

DUP_HAMMING: int | None = 2
DUP_COSINE: float | None = None
DROP_REASONS = ("query", "private", "flagged", "unknown", "missing", "duplicate")

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
        missing: Collection[int] = (),
    ) -> tuple[list[Result], dict[str, int]]:
        """At most ``k`` results from candidates ``ids`` (``(n,)`` int64, best first) and the drop counts.

        ``meta`` holds the rows of the candidates (an id missing from it is unknown);
        ``missing``: ids whose object file is gone. When the query is a platform image
        (``query_image_id``), copies of it are dropped too: the requester already has that
        picture. A file query keeps its copies' first instance.
        """
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.asarray(scores)
        dropped = dict.fromkeys(DROP_REASONS, 0)
        passing: list[int] = []  # positions in `ids` that pass the visibility rules
        for pos, i in enumerate(ids.tolist()):
            if query_image_id is not None and i == query_image_id:
                dropped["query"] += 1
                continue
            reason: str | None = hidden_reason(meta.get(i), requester_id, as_result=True)
            if reason is None and i in missing:
                reason = "missing"
            if reason is not None:
                dropped[reason] += 1
                continue
            passing.append(pos)
        use_h = hashes is not None and self.dup_hamming is not None
        use_v = vectors is not None and self.dup_cosine is not None
        kept = _Kept(use_h, use_v)
        if query_image_id is not None and (use_h or use_v):  # the query's copies count as duplicates
            kept.add(hashes([query_image_id])[0] if use_h else None, vectors([query_image_id])[0] if use_v else None)  # type: ignore[misc]
        results: list[Result] = []
        chunk = max(2 * k, 32)
        for s in range(0, len(passing), chunk):
            positions = passing[s : s + chunk]
            part: list[int] = ids[positions].tolist()
            h = hashes(part) if use_h else None  # type: ignore[misc]
            v = vectors(part) if use_v else None  # type: ignore[misc]
            for j, (p, image_id) in enumerate(zip(positions, part, strict=True)):
                hj = None if h is None else h[j]
                vj = None if v is None else v[j]
                if kept.is_duplicate(hj, vj, self.dup_hamming, self.dup_cosine):
                    dropped["duplicate"] += 1
                    continue
                kept.add(hj, vj)
                results.append(Result(image_id, float(scores[p]), len(results) + 1, meta[image_id].tags or ""))
                if len(results) >= k:
                    return results, dropped
        return results, dropped


class _Kept:
    """Hashes and vectors of the results kept so far (and of the query), grown one at a time."""

    def __init__(self, use_hashes: bool, use_vectors: bool):
        self.hashes: np.ndarray | None = np.empty(0, np.uint64) if use_hashes else None
        self.vectors: list[np.ndarray] | None = [] if use_vectors else None

    def add(self, h: np.uint64 | None, v: np.ndarray | None) -> None:
        if self.hashes is not None and h is not None:
            self.hashes = np.append(self.hashes, np.uint64(h))
        if self.vectors is not None and v is not None:
            self.vectors.append(np.asarray(v, np.float32))

    def is_duplicate(
        self, h: np.uint64 | None, v: np.ndarray | None, max_bits: int | None, min_cosine: float | None
    ) -> bool:
        """Whether a candidate with hash ``h`` / vector ``v`` copies a kept one (``O(kept)`` work)."""
        hashes = self.hashes
        if hashes is not None and hashes.size and h is not None and max_bits is not None:
            return bool((hamming(hashes, int(h)) <= max_bits).any()) or self._cosine_dup(v, min_cosine)
        return self._cosine_dup(v, min_cosine)

    def _cosine_dup(self, v: np.ndarray | None, min_cosine: float | None) -> bool:
        if self.vectors and v is not None and min_cosine is not None:
            return bool((np.stack(self.vectors) @ v >= min_cosine).any())
        return False
