"""The nearest-neighbour service: a vector index behind a read-write lock, optionally persisted.

FAISS indexes answer concurrent searches safely but must not be modified while being
searched: searches (and reads of stored vectors) share a read lock; additions, removals
and saves take the write lock. The ``tree`` kind builds its structure lazily on its first
search, so it is searched exclusively.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .. import index as index_mod
from ..index import VectorIndex
from ..protocols import Encoder

log = logging.getLogger(__name__)


class ReadWriteLock:
    """Many readers or one writer: concurrent searches, exclusive additions and removals."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
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
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class NeighbourService:
    """Thread-safe access to one index; ``save`` persists it to ``index_path`` (``None``: never saved)."""

    def __init__(self, index: VectorIndex, index_path: str | os.PathLike[str] | None = None):
        self.index = index
        self.index_path = Path(index_path) if index_path is not None else None
        self.rw = ReadWriteLock()
        self._shared_search = index.kind != "tree"

    def __len__(self) -> int:
        return len(self.index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` for one ``(d,)`` query → ``(scores, ids)``, best first, without the -1 padding."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        with self.rw.read() if self._shared_search else self.rw.write():
            n = len(self.index)
            if n == 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            scores, ids = self.index.search(q, int(min(k, n)))
        scores, ids = np.asarray(scores[0]), np.asarray(ids[0]).astype(np.int64)
        keep = ids >= 0
        return scores[keep], ids[keep]

    def ids(self) -> np.ndarray:
        """Every indexed image id, ``(n,)`` int64."""
        with self.rw.read():
            return np.asarray(self.index.ids(), dtype=np.int64)

    def reconstruct(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors ``(n, d)`` float32 of ``ids``; raises what the index raises
        (``KeyError`` for an id it lacks, ``VectorIndexError`` for a kind that keeps no vectors)."""
        with self.rw.read():
            return np.asarray(self.index.reconstruct(np.asarray(ids, dtype=np.int64)), dtype=np.float32)

    def add(self, embeddings: np.ndarray, ids: Sequence[int]) -> None:
        with self.rw.write():
            self.index.add(np.asarray(embeddings, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        with self.rw.write():
            self.index.remove(np.asarray(ids, dtype=np.int64))

    def save(self) -> None:
        """Persist the index atomically (a killed save leaves the previous one intact)."""
        if self.index_path is None:
            return
        with self.rw.write():
            self.index.save(self.index_path)


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
