"""Systems under test that rank through the serving facade: the one search path.

A simulated user must see exactly what a real one would: the nearest neighbours *after* the
re-ranking rules (another user's private images, flagged images and near-duplicates
dropped).  :class:`ServiceSearch` is therefore a thin adapter around
:meth:`vs_lib.serving.SearchService.search_ids`; it never ranks by itself.  Two caches
keep a simulation of tens of thousands of sessions fast, each safe by construction:

- :class:`CandidateCache` wraps the service's vector index and answers a query vector it
  has seen from the index's own answer to it, computed for many queries in one batch
  (:meth:`CandidateCache.warm`); any change to the index (an upload, a removal) empties it;
- :class:`ServiceSearch` remembers each result list by ``(query, k, viewer)``.  A
  requester who owns no visible private image sees what an anonymous requester sees (the
  visibility rule of :mod:`vs_lib.serving.access`: only private images depend on who asks,
  and flagged ones are hidden from everyone), so all such users share one ``viewer`` key;
  every owner of a private image has their own.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np
from numpy.typing import ArrayLike

from .clicks import SimulationError

if TYPE_CHECKING:
    from ..index import VectorIndex
    from ..protocols import Encoder

__all__ = ["PUBLIC", "CandidateCache", "SearchesByImage", "ServiceSearch", "private_owners", "visible_queries"]

PUBLIC = -1  # the viewer key of every requester who owns no visible private image


class SearchesByImage(Protocol):
    """What the simulation needs from the facade: ranked ids for a platform query image."""

    def search_ids(self, query_image_id: int, k: int, user_id: int | None) -> list[int]: ...


class CandidateCache:
    """A vector index that answers query vectors it has seen from a batch-computed answer.

    ``inner``: any :class:`~vs_lib.index.VectorIndex`; ``depth``: how many neighbours are kept
    per warmed query (a search for more goes to ``inner``).  Every other call is passed on
    to ``inner``; ``add`` and ``remove`` empty the cache first, so an answer is never stale.
    """

    def __init__(self, inner: VectorIndex, depth: int = 200):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.inner = inner
        self.dim, self.kind, self.metric = inner.dim, inner.kind, inner.metric
        self.fingerprint, self.params = inner.fingerprint, inner.params
        self.depth = int(depth)
        self._answers: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    # -- the role's attributes: those of the wrapped index (``params`` is the same dict)
    @property
    def build_seconds(self) -> float:
        return self.inner.build_seconds

    @build_seconds.setter
    def build_seconds(self, value: float) -> None:
        self.inner.build_seconds = value

    @property
    def is_trained(self) -> bool:
        return self.inner.is_trained

    def warm(self, queries: np.ndarray, chunk: int = 2048) -> int:
        """Search ``queries`` ``(n, dim)`` float32 in batches and keep each answer; returns how many are new."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        keys = [row.tobytes() for row in q]
        first: dict[bytes, int] = {}  # one search per distinct new vector
        for i, key in enumerate(keys):
            if key not in self._answers:
                first.setdefault(key, i)
        todo = list(first.values())
        depth = min(self.depth, len(self.inner))
        if depth == 0:
            return 0
        for s in range(0, len(todo), chunk):
            rows = todo[s : s + chunk]
            scores, ids = self.inner.search(q[rows], depth)
            for r, sc, found in zip(rows, scores, ids, strict=True):
                self._answers[keys[r]] = (sc, found)
        return len(todo)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The inner index's answer, from the cache for one warmed query and ``k <= depth``."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 2 and len(q) == 1:
            got = self._answers.get(q[0].tobytes())
            if got is not None and int(k) <= len(got[1]):
                self.hits += 1
                return got[0][None, : int(k)].copy(), got[1][None, : int(k)].copy()
        self.misses += 1
        return self.inner.search(queries, k)

    def clear(self) -> None:
        self._answers.clear()

    # -- changes empty the cache; everything else is the inner index's
    def add(self, embeddings: np.ndarray, ids: Any) -> Self:
        self.clear()
        self.inner.add(embeddings, ids)
        return self

    def remove(self, ids: Any) -> int:
        self.clear()
        return self.inner.remove(ids)

    def train(self, embeddings: np.ndarray) -> Self:
        self.inner.train(embeddings)
        return self

    def min_training_vectors(self) -> int:
        return self.inner.min_training_vectors()

    def set_search_params(self, **params: Any) -> Self:
        self.clear()
        self.inner.set_search_params(**params)
        return self

    def reconstruct(self, ids: Any) -> np.ndarray:
        return self.inner.reconstruct(ids)

    def ids(self) -> np.ndarray:
        return self.inner.ids()

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.inner

    def memory_bytes(self) -> int:
        return self.inner.memory_bytes()

    def save(self, path: str | os.PathLike[str]) -> Path:
        return self.inner.save(path)


def private_owners(db_path: str | os.PathLike[str] | None = None) -> set[int]:
    """Users who own at least one private, unflagged image: the only ones whose results differ
    from an anonymous requester's (``images`` table of the platform database ``db_path``)."""
    from .. import data

    with contextlib.closing(data.connect(db_path, readonly=True)) as conn:
        rows = conn.execute("SELECT DISTINCT owner_id FROM images WHERE is_private = 1 AND is_flagged = 0")
        return {int(r[0]) for r in rows}


class ServiceSearch:
    """A system under test: ``system(query_image_id, k, user_id)`` is ``service.search_ids(...)``.

    ``service``: a :class:`~vs_lib.serving.SearchService` (or anything with ``search_ids``);
    ``owners``: :func:`private_owners` of its database (results are cached per viewer, see
    the module doc; ``None`` caches per user); ``candidates``: the :class:`CandidateCache`
    inside the service's index, which :meth:`warm` fills.  Build one over embeddings with
    :meth:`from_embeddings`.
    """

    def __init__(
        self,
        service: SearchesByImage,
        *,
        name: str = "service",
        owners: set[int] | None = None,
        candidates: CandidateCache | None = None,
        cache_results: bool = True,
    ):
        self.service = service
        self.name = name
        self.owners = owners
        self.candidates = candidates
        self.cache_results = cache_results
        self._results: dict[tuple[int, int, int | None], list[int]] = {}
        self.calls = 0  # searches that went through the service

    @classmethod
    def from_embeddings(
        cls,
        encoder: Encoder,
        embeddings: np.ndarray,
        ids: ArrayLike,
        *,
        db_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        depth: int = 200,
        **service_kwargs: Any,
    ) -> ServiceSearch:
        """A :class:`~vs_lib.serving.SearchService` over an in-memory flat index of ``embeddings``.

        ``embeddings`` ``(n, d)`` float32 L2-normalised, made by ``encoder`` for the platform
        images ``ids`` (the index the service searches: queries by id must be among them for
        their stored vector to be used); ``db_path``: the platform database the re-ranking
        rules read (default ``config.db_path()``; only read). Nothing is saved to disk.
        """
        from .. import index as index_mod
        from ..serving import SearchService

        vecs = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != encoder.dim:
            raise SimulationError(f"need (n, {encoder.dim}) embeddings from this encoder, got {vecs.shape}")
        flat = index_mod.create(encoder.dim, "flat", fingerprint=encoder.fingerprint)
        flat.add(vecs, np.asarray(ids, dtype=np.int64))
        candidates = CandidateCache(flat, depth)
        service = SearchService(encoder, candidates, db_path=db_path, **service_kwargs)
        label = name or str(getattr(encoder, "name", "service"))
        return cls(service, name=label, owners=private_owners(db_path), candidates=candidates)

    def viewer(self, user_id: int | None) -> int | None:
        """The cache key of a requester: :data:`PUBLIC` for anyone who sees what everyone sees."""
        if user_id is None:
            return PUBLIC
        if self.owners is not None and int(user_id) not in self.owners:
            return PUBLIC
        return int(user_id)

    def warm(self, query_ids: ArrayLike, k: int) -> None:
        """Batch the index searches of many query images (those the index holds)."""
        if self.candidates is None:
            return
        q = np.unique(np.asarray(query_ids, dtype=np.int64).ravel())
        held = q[np.isin(q, self.candidates.ids())]
        if held.size:
            self.candidates.warm(self.candidates.reconstruct(held))

    def __call__(self, query_image_id: int, k: int, user_id: int | None) -> list[int]:
        key = (int(query_image_id), int(k), self.viewer(user_id))
        if self.cache_results and key in self._results:
            return list(self._results[key])
        self.calls += 1
        got = [int(i) for i in self.service.search_ids(int(query_image_id), int(k), user_id)]
        if self.cache_results:
            self._results[key] = got
        return list(got)

    def close(self) -> None:
        close = getattr(self.service, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> ServiceSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def visible_queries(ids: Sequence[int] | np.ndarray, db_path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """The ``ids`` every user may search with: public, unflagged images of the platform database."""
    from .. import data

    arr = np.asarray(ids, dtype=np.int64)
    with contextlib.closing(data.connect(db_path, readonly=True)) as conn:
        hidden = _hidden_ids(conn)
    return np.sort(arr[~np.isin(arr, hidden)])


def _hidden_ids(conn: sqlite3.Connection) -> np.ndarray:
    rows = conn.execute("SELECT id FROM images WHERE is_private = 1 OR is_flagged = 1").fetchall()
    return np.asarray([r[0] for r in rows], dtype=np.int64)
