"""The nearest-neighbour service: a vector index that takes uploads without ever stalling searches.

A FAISS index must not change while it is searched, and rewriting it on disk costs O(N).
So the service keeps two parts:

- the **base** index (any kind), searched under a shared lock;
- a small **delta**: the vectors added since the last merge (exact inner products over a few
  hundred rows) and the ids removed from the base since then (filtered out of its results).

An upload changes only the delta — an immutable state object swapped in one assignment — so
it never waits for a search and no search waits for it. :meth:`NeighbourService.merge` moves
the delta into the base under the exclusive lock (a short ``add``), and :meth:`save` writes
the base while searches go on (it holds the shared lock; the only writer is the merger, which
does not run during a save). The lock prefers writers, so a merge is never starved by a
stream of searches; merges are rare (every few hundred uploads or seconds).

Milvus is a database that takes inserts while it serves searches: there, additions go
straight to it. The ``tree`` kind builds its structure lazily on its first search, so it is
searched exclusively.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import index as index_mod
from ..index import VectorIndex
from ..index.base import check_ids, check_vectors
from ..protocols import Encoder

log = logging.getLogger(__name__)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before readers that arrive after it."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(frozen=True)
class Delta:
    """What changed since the last merge: ``ids`` ``(m,)`` int64 and ``vectors`` ``(m, d)`` float32
    added, and ``removed`` ids still in the base. Immutable: a change makes a new one."""

    ids: np.ndarray
    vectors: np.ndarray
    removed: frozenset[int]

    @classmethod
    def empty(cls, dim: int) -> Delta:
        return cls(np.empty(0, np.int64), np.empty((0, dim), np.float32), frozenset())

    def position(self, image_id: int) -> int | None:
        hit = np.flatnonzero(self.ids == int(image_id))
        return int(hit[0]) if hit.size else None


class NeighbourService:
    """Thread-safe search over ``index`` plus the delta; ``save`` persists the merged base to ``index_path``."""

    def __init__(self, index: VectorIndex, index_path: str | os.PathLike[str] | None = None):
        self.index = index
        self.index_path = Path(index_path) if index_path is not None else None
        self.rw = ReadWriteLock()
        self._shared_search = index.kind != "tree"
        self._direct = index.kind == "milvus"  # a database: takes inserts while it serves searches
        self._delta = Delta.empty(index.dim)
        self._mutate = threading.Lock()  # serialises changes of the delta
        self._merging: frozenset[int] = frozenset()  # delta ids a merge is moving into the base

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        d = self._delta
        return len(self.index) - len(d.removed) + len(d.ids)

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, int | np.integer):
            return False
        d = self._delta
        return d.position(int(image_id)) is not None or (int(image_id) not in d.removed and image_id in self.index)

    @property
    def pending(self) -> int:
        """Changes not yet merged into the base (additions + removals)."""
        d = self._delta
        return len(d.ids) + len(d.removed)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` for one ``(d,)`` query → ``(scores, ids)``, best first, without padding."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        with self.rw.read() if self._shared_search else self.rw.write():
            d = self._delta  # consistent with the base: merges swap both under the write lock
            n = len(self.index)
            if n:
                scores, ids = self.index.search(q, int(min(k + len(d.removed), n)))
                scores, ids = np.asarray(scores[0]), np.asarray(ids[0]).astype(np.int64)
            else:
                scores, ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
        keep = ids >= 0
        if d.removed:
            keep &= ~np.isin(ids, np.fromiter(d.removed, np.int64, len(d.removed)))
        scores, ids = scores[keep], ids[keep]
        if len(d.ids):
            extra = d.vectors @ q[0] if self.index.metric == "ip" else ((d.vectors - q[0]) ** 2).sum(axis=1)
            scores, ids = np.concatenate([scores, extra.astype(np.float32)]), np.concatenate([ids, d.ids])
        order = np.argsort(-scores if self.index.metric == "ip" else scores, kind="stable")[: int(k)]
        return scores[order], ids[order]

    def ids(self) -> np.ndarray:
        """Every indexed image id, ``(n,)`` int64, sorted."""
        with self.rw.read():
            d = self._delta
            base = np.asarray(self.index.ids(), dtype=np.int64)
        if d.removed:
            base = base[~np.isin(base, np.fromiter(d.removed, np.int64, len(d.removed)))]
        return np.union1d(base, d.ids)

    def reconstruct(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors ``(n, d)`` float32 of ``ids``; raises what the index raises
        (``KeyError`` for an id it lacks, ``VectorIndexError`` for a kind that keeps no vectors)."""
        want = np.asarray(ids, dtype=np.int64).reshape(-1)
        d = self._delta
        out = np.empty((len(want), self.index.dim), np.float32)
        in_delta = np.isin(want, d.ids)
        gone = [int(i) for i in want[~in_delta] if int(i) in d.removed]
        if gone:
            raise KeyError(f"ids not in the index: {gone[:5]}")
        for j in np.flatnonzero(in_delta):
            out[j] = d.vectors[d.position(int(want[j]))]
        rest = np.flatnonzero(~in_delta)
        if rest.size:
            with self.rw.read():
                out[rest] = np.asarray(self.index.reconstruct(want[rest]), dtype=np.float32)
        return out

    # ------------------------------------------------------------------ changes (never wait for searches)
    def add(self, embeddings: np.ndarray, ids: Sequence[int]) -> None:
        """Make ``(n, d)`` embeddings searchable under new ``ids`` at once."""
        x = check_vectors(embeddings, self.index.dim)
        arr = check_ids(ids, len(x))
        if self._direct:
            with self.rw.write():
                self.index.add(x, arr)
            return
        with self._mutate:
            d = self._delta
            present = [int(i) for i in arr if int(i) in self]
            if present:
                raise ValueError(f"ids already in the index: {present[:5]}; remove them first")
            self._delta = Delta(np.concatenate([d.ids, arr]), np.concatenate([d.vectors, x]), d.removed)

    def remove(self, ids: Sequence[int]) -> None:
        """Take ``ids`` out of every search at once (all must be indexed)."""
        arr = check_ids(ids)
        if self._direct:
            with self.rw.write():
                self.index.remove(arr)
            return
        with self._mutate:
            d = self._delta
            missing = [int(i) for i in arr if int(i) not in self]
            if missing:
                raise ValueError(f"ids not in the index: {missing[:5]}")
            in_delta = np.isin(d.ids, arr)
            # an id a running merge is moving into the base must also be filtered out of it
            removed = set(d.removed) | {int(i) for i in arr if int(i) not in d.ids or int(i) in self._merging}
            self._delta = Delta(d.ids[~in_delta], d.vectors[~in_delta], frozenset(removed))

    def merge(self) -> int:
        """Move the delta into the base (one exclusive ``remove`` + ``add``); returns the changes moved."""
        if self._direct:
            return 0
        with self._mutate:
            d = self._delta
            self._merging = frozenset(int(i) for i in d.ids)
        if not len(d.ids) and not d.removed:
            return 0
        try:
            with self.rw.write():
                gone = np.fromiter(d.removed, np.int64, len(d.removed))
                gone = gone[np.isin(gone, self.index.ids())]
                if gone.size:
                    self.index.remove(gone)
                if len(d.ids):
                    self.index.add(d.vectors, d.ids)
                with self._mutate:  # keep what arrived meanwhile
                    now = self._delta
                    moved = np.isin(now.ids, d.ids)
                    self._delta = Delta(now.ids[~moved], now.vectors[~moved], now.removed - d.removed)
        finally:
            self._merging = frozenset()
        return len(d.ids) + len(d.removed)

    def save(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Merge, then write the base to ``path`` (default ``index_path``) while searches go on.

        The caller holds the folder's inter-process lock. Returns whether anything was written.
        """
        target = Path(path) if path is not None else self.index_path
        if target is None:
            return False
        self.merge()
        with self.rw.read():
            self.index.save(target)
        return True


def ensure_index(
    encoder: Encoder,
    index_path: str | os.PathLike[str],
    kind: str = "flat",
    *,
    conn: sqlite3.Connection | None = None,
    progress: bool = True,
) -> Any:
    """``index.sync_index``, rebuilding from scratch when the saved index was made by another encoder.

    The index is derived data: after retraining, re-embedding every image is the only fix.
    Returns what ``sync_index`` reports (how many images were added and removed, the total).
    """
    try:
        return index_mod.sync_index(encoder, conn, index_path, kind=kind, progress=progress)
    except index_mod.IndexMismatchError as e:
        log.warning("%s; rebuilding the index at %s for %s", e, index_path, encoder.fingerprint)
        return index_mod.sync_index(encoder, conn, index_path, kind=kind, rebuild=True, progress=progress)
