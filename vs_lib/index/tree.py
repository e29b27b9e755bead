"""The tree-based family: scikit-learn's KD-tree or ball tree behind the ``VectorIndex`` interface.

``create(dim, "tree", algorithm="kd_tree" | "ball_tree", leaf_size=40)``.  The search is
exact: a tree prunes whole boxes (or balls) that cannot hold a closer point, which works in a
few dimensions and fails in hundreds, where the query ball touches nearly every box;
``distance_counts`` counts the stored vectors a query really compares itself with (notebook
04 counts them by dimension).  The approximate tree family is the ``annoy`` kind.  The tree ranks by Euclidean distance; with ``metric="ip"`` the vectors must be
L2-normalised, so that ``|a - b|² = 2 - 2·a·b`` orders them exactly like the inner product,
and the reported scores are those inner products.

The float vectors are kept (sorted by id, like the ids) and the tree is built lazily on the
first search after a change.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Self

import numpy as np

from .base import BaseIndex, check_k, check_params, check_vectors
from .persistence import Manifest, OpenOptions, load_npy

DEFAULTS: dict[str, Any] = {"algorithm": "kd_tree", "leaf_size": 40}
ALGORITHMS = ("kd_tree", "ball_tree")

__all__ = ["TreeIndex"]


class TreeIndex(BaseIndex):
    """An exact kd-tree / ball-tree index over kept float vectors (see the module doc)."""

    kind = "tree"

    def __init__(self, dim: int, metric: str = "ip", *, fingerprint: str | None = None, **params: Any):
        self.params: dict[str, Any] = check_params(self.kind, params, DEFAULTS)
        if self.params["algorithm"] not in ALGORITHMS:
            raise ValueError(f"tree algorithm must be one of {ALGORITHMS}, got {self.params['algorithm']!r}")
        super().__init__(dim, metric, fingerprint=fingerprint, keep_vectors=True)
        self._tree: Any = None  # built on the first search after a change

    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        if self.metric == "ip" and np.abs(np.linalg.norm(x, axis=1) - 1).max() > 1e-3:
            raise ValueError(
                "the tree index with metric='ip' needs L2-normalised embeddings (it ranks by Euclidean distance)"
            )
        self._tree = None

    def _remove(self, ids: np.ndarray) -> None:
        self._tree = None

    def set_search_params(self, **params: Any) -> Self:
        """A tree has no query-time knobs (it is exact)."""
        if params:
            raise ValueError(f"the tree index has no search parameters, got {sorted(params)}")
        return self

    def _built(self) -> Any:
        if self._tree is None:
            from sklearn.neighbors import BallTree, KDTree

            cls = KDTree if self.params["algorithm"] == "kd_tree" else BallTree
            t0 = time.perf_counter()
            self._tree = cls(np.asarray(self._vectors), leaf_size=int(self.params["leaf_size"]))
            self.build_seconds += time.perf_counter() - t0
        return self._tree

    def distance_counts(self, queries: np.ndarray, k: int) -> np.ndarray:
        """How many stored vectors each query's exact search computes a distance to: ``(n,)``
        int64, from scikit-learn's ``get_n_calls`` (point-to-point distances; the tree's
        per-dimension bounds are not counted).  A linear scan computes ``len(self)``."""
        q = check_vectors(queries, self.dim, "queries")
        k = min(check_k(k), len(self))
        out = np.zeros(len(q), np.int64)
        if k == 0:
            return out
        tree = self._built()
        for i in range(len(q)):
            tree.reset_n_calls()
            tree.query(q[i : i + 1], k=k)
            out[i] = tree.get_n_calls()
        return out

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, rows = self._built().query(q, k=k)
        d2 = (dist**2).astype(np.float32)
        scores = 1.0 - d2 / 2.0 if self.metric == "ip" else d2
        return scores.astype(np.float32), self._ids[rows]

    def memory_bytes(self) -> int:
        """The ids, the kept float vectors and, once built, the tree's arrays."""
        total = self._ids.nbytes + self._kept_vectors_bytes()
        if self._tree is not None:  # get_arrays(): (data, idx_array, node_data, node_bounds); data is ours
            total += sum(a.nbytes for a in self._tree.get_arrays()[1:] if hasattr(a, "nbytes"))
        return int(total)

    def _versions(self) -> dict[str, str]:
        import sklearn

        return {"scikit-learn": sklearn.__version__}

    def _write_files(self, folder: Path) -> dict[str, dict[str, str]]:
        files: dict[str, dict[str, str]] = {}
        self._write_kept(folder, files)
        return files

    @classmethod
    def from_manifest(cls, path: Path, manifest: Manifest, options: OpenOptions) -> Self:
        """The saved tree index described by an already checked ``manifest``."""
        blobs = manifest.verified_files(path, required=("ids", "vectors"))
        self = cls(manifest.dim, manifest.metric, fingerprint=manifest.fingerprint, **manifest.params)
        self._ids = np.asarray(load_npy(blobs["ids"]), dtype=np.int64)
        self._vectors = load_npy(blobs["vectors"], mmap=options.mmap_vectors)
        self._check_count(path, manifest)
        return self
