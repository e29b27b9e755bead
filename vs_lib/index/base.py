"""What every index backend shares: the ``VectorIndex`` role, validation and bookkeeping.

``VectorIndex`` is a :class:`typing.Protocol`: the interface the rest of the library codes
against (serving, notebooks, benchmarks).  The FAISS kinds (:mod:`.faiss_index`), the
kd-tree (:mod:`.tree`) and Milvus (:mod:`.milvus`) implement it by subclassing
:class:`BaseIndex`, which holds what they have in common:

- the checks on user input, with one wording everywhere (:func:`check_vectors`,
  :func:`check_ids`, :func:`check_k`, :func:`check_params`, :meth:`BaseIndex.check_new`,
  :meth:`BaseIndex.check_stored`);
- the sorted ids of the stored vectors (and, for the kinds that keep them, the float vectors
  aligned with those ids), updated only after the backend accepted a change;
- the padding of search results: ``-1`` ids and ``-inf`` (``ip``) / ``+inf`` (``l2``) scores,
  so missing results always sort last;
- ``save``: the backend writes its data files, then the shared :class:`~.persistence.Manifest`
  is written last.

Conventions: ``embeddings`` / ``queries`` ``(n, dim)`` float32, finite (L2-normalised for
``metric="ip"``, the course default, where the inner product is the cosine); ``ids`` ``(n,)``
int64, ``>= 0``, unique: the image ids of the platform database.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from .. import __version__
from .errors import IndexCorruptedError, VectorIndexError
from .persistence import Manifest, OpenOptions, write_npy

METRICS = ("ip", "l2")

__all__ = [
    "METRICS",
    "BaseIndex",
    "VectorIndex",
    "check_ids",
    "check_k",
    "check_params",
    "check_vectors",
    "pad_value",
]


# ---------------------------------------------------------------------- the role
@runtime_checkable
class VectorIndex(Protocol):
    """The nearest-neighbour service's interface, implemented by every index kind.

    Make one with :func:`vs_lib.index.create`, open a saved one with :func:`vs_lib.index.load`.
    """

    dim: int
    kind: str
    metric: str
    fingerprint: str | None
    params: dict[str, Any]
    build_seconds: float

    @property
    def is_trained(self) -> bool: ...

    def min_training_vectors(self) -> int:
        """The fewest vectors the first ``add`` (or ``train``) accepts; 0 if no training."""
        ...

    def train(self, embeddings: np.ndarray) -> Self:
        """Train cells / codebooks on a sample ``(n, dim)``; a no-op for kinds without training."""
        ...

    def add(self, embeddings: np.ndarray, ids: Any) -> Self:
        """Store ``(n, dim)`` embeddings under unique int64 ``ids`` not yet stored."""
        ...

    def remove(self, ids: Any) -> int:
        """Delete ``ids`` (all must be stored); returns how many were removed."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float32, ids (n, k) int64)``, best first, padded with id ``-1``."""
        ...

    def set_search_params(self, **params: Any) -> Self:
        """Change query-time knobs (``nprobe``, ``ef_search``, ``rerank``, ...) in place."""
        ...

    def reconstruct(self, ids: Any) -> np.ndarray:
        """The stored float vectors of ``ids``, ``(n, dim)`` float32, in the order given."""
        ...

    def ids(self) -> np.ndarray:
        """The stored ids, sorted ascending, ``(len,)`` int64."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, image_id: object) -> bool: ...

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM (vectors or codes, ids, graph, centroids)."""
        ...

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to the directory ``path``; the manifest is written last."""
        ...


# ---------------------------------------------------------------------- validation
def check_dim(dim: object) -> int:
    """``dim`` as a positive int, or ``ValueError``."""
    if not isinstance(dim, int | np.integer) or isinstance(dim, bool) or int(dim) <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def check_metric(metric: object) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return str(metric)


def check_vectors(x: Any, dim: int, what: str = "embeddings") -> np.ndarray:
    """``x`` as a contiguous ``(n, dim)`` float32 array (a single vector becomes one row)."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {tuple(np.shape(x))}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def check_ids(ids: Any, n: int | None = None) -> np.ndarray:
    """``ids`` as ``(n,)`` int64: integers, ``>= 0``, unique (and ``n`` of them if given)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D array of integers, got dtype {arr.dtype} shape {arr.shape}")
    arr = arr.astype(np.int64)
    if n is not None and len(arr) != n:
        raise ValueError(f"ids length {len(arr)} does not match the number of embeddings {n}")
    if arr.size and arr.min() < 0:
        raise ValueError("ids must be >= 0 (-1 marks padding in search results)")
    s = np.sort(arr)
    dup = np.unique(s[1:][s[1:] == s[:-1]])
    if dup.size:
        raise ValueError(f"ids contain duplicates, e.g. {dup[:5].tolist()}")
    return arr


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_params(kind: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``params``; ``ValueError`` naming any parameter ``kind`` lacks."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for kind {kind!r}; expected some of {sorted(defaults)}"
        )
    return {**defaults, **params}


def pad_value(metric: str) -> float:
    """The score of a missing result: it sorts after every real one."""
    return -np.inf if metric == "ip" else np.inf


def _preview(ids: np.ndarray) -> str:
    return f"{ids[:5].tolist()}{' ...' if ids.size > 5 else ''}"


# ---------------------------------------------------------------------- the shared base
class BaseIndex(ABC):
    """Bookkeeping and templates shared by every backend (see the module doc).

    A backend implements ``_add(x, ids)`` / ``_remove(ids)`` (change its own structure; raise
    to refuse), ``_search(queries, k)`` with ``1 <= k <= len(self)``, and for persistence
    ``_write_files``, ``_versions`` and a ``from_manifest`` class method.  ``add``, ``remove``
    and ``search`` validate first and update the ids only once the backend succeeded.
    """

    kind: str  # set by each backend (a class attribute, or per instance for the FAISS kinds)
    params: dict[str, Any]

    def __init__(self, dim: int, metric: str = "ip", *, fingerprint: str | None = None, keep_vectors: bool = False):
        self.dim = check_dim(dim)
        self.metric = check_metric(metric)
        self.fingerprint = fingerprint
        self.build_seconds = 0.0
        self._ids = np.empty(0, dtype=np.int64)  # sorted ids of the stored vectors
        # float vectors aligned with self._ids, for kinds that keep them (tree, re-ranking)
        self._vectors: np.ndarray | None = np.empty((0, self.dim), np.float32) if keep_vectors else None

    # ------------------------------------------------------------------ validation
    def check_new(self, embeddings: Any, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(embeddings, ids)`` for an add; refuses ids already stored."""
        x = check_vectors(embeddings, self.dim, "embeddings")
        arr = check_ids(ids, len(x))
        present = arr[np.isin(arr, self._ids, assume_unique=True)]
        if present.size:
            raise ValueError(f"ids already in the index: {_preview(present)}; remove them first")
        return x, arr

    def check_stored(self, ids: Any) -> np.ndarray:
        """Validated ids for a removal; refuses ids that are not stored."""
        arr = check_ids(ids)
        missing = arr[~np.isin(arr, self._ids, assume_unique=True)]
        if missing.size:
            raise ValueError(f"ids not in the index: {_preview(missing)}")
        return arr

    # ------------------------------------------------------------------ training (none by default)
    @property
    def is_trained(self) -> bool:
        return True

    def min_training_vectors(self) -> int:
        return 0

    def train(self, embeddings: np.ndarray) -> Self:
        check_vectors(embeddings, self.dim, "training embeddings")
        return self

    # ------------------------------------------------------------------ add / remove / search
    def add(self, embeddings: np.ndarray, ids: Any) -> Self:
        """Add ``(n, dim)`` float32 embeddings under unique int64 ``ids`` not yet in the index."""
        x, arr = self.check_new(embeddings, ids)
        if len(x) == 0:
            return self
        t0 = time.perf_counter()
        self._add(x, arr)
        merged = np.concatenate([self._ids, arr])
        order = np.argsort(merged, kind="stable")
        if self._vectors is not None:
            self._vectors = np.concatenate([np.asarray(self._vectors), x])[order]
        self._ids = merged[order]
        self.build_seconds += time.perf_counter() - t0
        return self

    def remove(self, ids: Any) -> int:
        """Remove ``ids`` (all must be present) and return how many were removed."""
        arr = self.check_stored(ids)
        if arr.size == 0:
            return 0
        self._remove(arr)
        keep = ~np.isin(self._ids, arr, assume_unique=True)
        self._ids = self._ids[keep]
        if self._vectors is not None:
            self._vectors = np.asarray(self._vectors)[keep]
        return int(arr.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query: ``(scores (n, k) float32, ids (n, k) int64)``.

        Best first.  Missing results (``k > len(self)``, an empty index, an approximate index
        that found fewer) have id ``-1`` and score ``-inf`` for ``ip`` / ``+inf`` for ``l2``.
        """
        q = check_vectors(queries, self.dim, "queries")
        k = check_k(k)
        scores = np.full((len(q), k), pad_value(self.metric), np.float32)
        found = np.full((len(q), k), -1, np.int64)
        kk = min(k, len(self._ids))
        if kk == 0 or len(q) == 0:
            return scores, found
        D, I = self._search(q, kk)
        found[:, :kk] = I
        scores[:, :kk] = np.where(I >= 0, D, pad_value(self.metric))
        return scores, found

    @abstractmethod
    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Store validated, new ``x (n, dim)`` under ``ids``; raise (changing nothing) to refuse."""

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None:
        """Delete validated, stored ``ids``."""

    @abstractmethod
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k), ids (n, k))`` best first for ``1 <= k <= len(self)``; id ``-1`` where none."""

    @abstractmethod
    def set_search_params(self, **params: Any) -> Self:
        """Change query-time knobs; ``ValueError`` for a knob this kind lacks."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM."""

    # ------------------------------------------------------------------ stored vectors
    def reconstruct(self, ids: Any) -> np.ndarray:
        """The stored float vectors of ``ids``, ``(n, dim)`` float32, in the order given.

        ``KeyError`` for ids not in the index; :class:`VectorIndexError` for kinds that keep
        only compressed codes.
        """
        arr = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        missing = arr[~np.isin(arr, self._ids)]
        if missing.size:
            raise KeyError(f"ids not in the index: {_preview(missing)}")
        if arr.size == 0:
            return np.empty((0, self.dim), np.float32)
        if self._vectors is not None:
            return np.asarray(self._vectors[np.searchsorted(self._ids, arr)], dtype=np.float32)
        return self._reconstruct(arr)

    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        raise VectorIndexError(f"a {self.kind!r} index keeps no exact float vectors to reconstruct")

    def _kept_vectors_bytes(self) -> int:
        """RAM of the kept float vectors (0 when none, or memory-mapped from disk)."""
        if self._vectors is None or isinstance(self._vectors, np.memmap):
            return 0
        return int(self._vectors.nbytes)

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        """The stored ids, sorted ascending, ``(len,)`` int64 (a copy)."""
        return self._ids.copy()

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, int | np.integer):
            return False
        i = int(np.searchsorted(self._ids, image_id))
        return bool(i < len(self._ids) and self._ids[i] == image_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, kind={self.kind!r}, metric={self.metric!r}, n={len(self)}, params={self.params})"

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to the directory ``path`` (created): data files named by checksum, then
        ``manifest.json`` last.  Interrupting it leaves the previous save loadable."""
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"index path {folder} exists and is not a directory (an index is saved as a directory)")
        folder.mkdir(parents=True, exist_ok=True)
        files = self._write_files(folder)
        manifest = Manifest(
            kind=self.kind,
            dim=self.dim,
            metric=self.metric,
            count=len(self),
            fingerprint=self.fingerprint,
            params=self._manifest_params(folder),
            trained=self.is_trained,
            files=files,
            versions={"vs_lib": __version__, "numpy": np.__version__, **self._versions()},
            extra=self._manifest_extra(),
        )
        manifest.write(folder)
        manifest.remove_unreferenced(folder)
        return folder

    @classmethod
    @abstractmethod
    def from_manifest(cls, path: Path, manifest: Manifest, options: OpenOptions) -> Self:
        """The saved index an already checked ``manifest`` describes (each backend reads its own files)."""

    @abstractmethod
    def _write_files(self, folder: Path) -> dict[str, dict[str, str]]:
        """Write the data files into ``folder`` (checksummed); return their manifest entries."""

    def _versions(self) -> dict[str, str]:
        return {}

    def _manifest_params(self, folder: Path) -> dict[str, Any]:
        return dict(self.params)

    def _manifest_extra(self) -> dict[str, Any]:
        return {}

    def _write_kept(self, folder: Path, files: dict[str, dict[str, str]]) -> None:
        """Add the ids and the kept float vectors to ``files`` (both written checksummed)."""
        files["ids"] = write_npy(folder, "ids", self._ids)
        if self._vectors is not None:
            files["vectors"] = write_npy(folder, "vectors", np.asarray(self._vectors))

    def _check_count(self, path: Path, manifest: Manifest) -> None:
        if len(self._ids) != manifest.count:
            raise IndexCorruptedError(f"index at {path} holds {len(self._ids)} vectors, manifest says {manifest.count}")
