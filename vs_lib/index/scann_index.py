"""ScaNN: partitions + anisotropic vector quantisation + exact re-scoring (``kind="scann"``).

``create(dim, "scann", metric="ip", n_leaves=None, leaves_to_search=None, reorder=100,
dims_per_block=2, aq_threshold=None)``.  Google's ScaNN answers a query in three steps:

1. **partition**: k-means splits the vectors into ``n_leaves`` leaves (like IVF cells); the
   query scores the leaf centres and visits the ``leaves_to_search`` best ones;
2. **score with quantised vectors**: every vector of those leaves is stored as 4-bit codes of
   sub-vectors of ``dims_per_block`` dimensions (asymmetric hashing, like PQ), and the query
   scores them all with lookup tables.  For ``metric="ip"`` the codebooks are trained with
   ScaNN's *anisotropic* loss: the part of a quantisation error parallel to the vector
   changes its inner products with likely queries most, so it is weighted more
   (``aq_threshold``, default 0.2 for ``ip``; for ``l2`` it is off, as in ann-benchmarks);
3. **re-score**: the best ``reorder`` candidates are scored again with the float vectors.

Defaults for a new index: ``n_leaves`` about ``sqrt(n)`` of the first build (at most ``n / 40``),
``leaves_to_search`` a tenth of them.  ``set_search_params(leaves_to_search=, reorder=)``
trade speed for recall.

Behind the ``VectorIndex`` interface (ids are int64 image ids; ScaNN numbers its points
0..n-1 and this class keeps the row → id table):

- **add**: ScaNN cannot start empty — its partitions and codebooks are trained on the data —
  so the first vectors wait in an exact buffer; once ``min_train`` vectors have arrived, the
  searcher is built on all of them (``is_trained`` becomes true).  Later adds are ScaNN
  ``upsert``\\ s: assigned to the existing leaves with the trained codebooks, without retraining.
- **remove**: ScaNN ``delete`` (its last point moves into the freed row; the table follows).
- **persistence**: ScaNN writes a folder of fixed file names; it is packed into one
  checksummed ``.tar`` data file next to the row table and the buffer, manifest last.

What it lacks next to the FAISS kinds: no training on an empty or tiny index (hence the
buffer); no incremental retraining — the leaves and codebooks stay those of the first build
as vectors come and go (``rebalance()`` retrains on the current vectors, as costly as a
build); and ``reconstruct`` is refused: ScaNN keeps the float vectors for re-scoring but
offers no call to read them back.
"""

from __future__ import annotations

import math
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

from .base import BaseIndex, check_k, check_params
from .errors import IndexCorruptedError, VectorIndexError
from .persistence import Manifest, OpenOptions, load_npy, write_checksummed, write_npy

DEFAULTS: dict[str, Any] = {
    "n_leaves": None,
    "leaves_to_search": None,
    "reorder": 100,
    "dims_per_block": 2,
    "aq_threshold": None,
    "min_train": 1000,
    "training_threads": 0,
}
SEARCH_PARAMS = ("leaves_to_search", "reorder")

__all__ = ["ScannIndex"]


def _pybind() -> Any:
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


class ScannIndex(BaseIndex):
    """ScaNN behind the ``VectorIndex`` interface (see the module doc)."""

    kind = "scann"

    def __init__(self, dim: int, metric: str = "ip", *, fingerprint: str | None = None, **params: Any):
        self.params: dict[str, Any] = check_params(self.kind, params, DEFAULTS)
        if int(self.params["min_train"]) < 16:
            raise ValueError("scann: min_train must be at least 16 (the codebooks are trained on the data)")
        if dim % int(self.params["dims_per_block"]):
            raise ValueError(f"scann: dims_per_block={self.params['dims_per_block']} must divide dim={dim}")
        super().__init__(dim, metric, fingerprint=fingerprint)
        self._searcher: Any = None  # ScaNN's ScannNumpy once trained
        self._row_ids = np.empty(0, np.int64)  # ScaNN row -> image id
        self._buf_x = np.empty((0, self.dim), np.float32)  # before the first build
        self._buf_ids = np.empty(0, np.int64)

    @property
    def searcher(self) -> Any:
        """ScaNN's searcher (``ScannNumpy``) underneath, ``None`` before the first build; its
        point ``i`` is the vector of id ``row_ids[i]``."""
        return self._searcher

    @property
    def row_ids(self) -> np.ndarray:
        """The id of each ScaNN point, ``(n,)`` int64."""
        return self._row_ids

    # ------------------------------------------------------------------ training
    @property
    def is_trained(self) -> bool:
        """Whether ScaNN's leaves and codebooks exist (false while the first vectors wait in the buffer)."""
        return self._searcher is not None

    def _build(self, x: np.ndarray, ids: np.ndarray) -> None:
        p, n = self.params, len(x)
        n_leaves = int(p["n_leaves"] or max(1, min(n // 40, round(math.sqrt(n)))))
        leaves_to_search = int(p["leaves_to_search"] or max(1, math.ceil(n_leaves / 10)))
        aq = p["aq_threshold"]
        aq = (0.2 if self.metric == "ip" else float("nan")) if aq is None else float(aq)
        builder = _pybind().builder(x, 10, "dot_product" if self.metric == "ip" else "squared_l2")
        builder = builder.tree(
            n_leaves, leaves_to_search, training_sample_size=n, spherical=self.metric == "ip", quantize_centroids=True
        )
        builder = builder.score_ah(int(p["dims_per_block"]), anisotropic_quantization_threshold=aq)
        builder = builder.reorder(int(p["reorder"]))
        builder.set_n_training_threads(int(p["training_threads"]))
        try:
            self._searcher = builder.build().searcher
        except RuntimeError as e:
            raise ValueError(f"ScaNN could not train on {n} vectors: {str(e).splitlines()[0]}") from None
        self._row_ids = ids.copy()
        p["n_leaves"], p["leaves_to_search"] = n_leaves, leaves_to_search

    def rebalance(self) -> Self:
        """Retrain leaves and codebooks on the vectors stored now (a full retraining)."""
        if self._searcher is not None:
            t0 = time.perf_counter()
            self._searcher.rebalance("")
            self.build_seconds += time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ add / remove
    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        if self._searcher is None:
            buf_x, buf_ids = np.concatenate([self._buf_x, x]), np.concatenate([self._buf_ids, ids])
            if len(buf_ids) >= int(self.params["min_train"]):
                self._build(buf_x, buf_ids)
                buf_x, buf_ids = buf_x[:0], buf_ids[:0]
            self._buf_x, self._buf_ids = buf_x, buf_ids
            return
        rows = self._searcher.upsert([None] * len(x), x, 256)
        expected = list(range(len(self._row_ids), len(self._row_ids) + len(x)))
        if list(rows) != expected:
            raise RuntimeError("ScaNN placed new points at unexpected rows; index left inconsistent")
        self._row_ids = np.concatenate([self._row_ids, ids])

    def _remove(self, ids: np.ndarray) -> None:
        if self._searcher is None:
            keep = ~np.isin(self._buf_ids, ids)
            self._buf_x, self._buf_ids = self._buf_x[keep], self._buf_ids[keep]
            return
        # ScaNN deletes one row at a time, moving its last point into the freed row: find each
        # id's row as it is at its turn, and mirror the moves on the row table
        rows = self._row_ids.copy()
        where = {int(v): j for j, v in enumerate(rows.tolist())}
        order, n = [], len(rows)
        for image_id in ids.tolist():
            j = where.pop(int(image_id))
            order.append(j)
            n -= 1
            if j != n:
                rows[j] = rows[n]
                where[int(rows[j])] = j
        moved = self._searcher.delete(order)
        if len(moved) != len(order):
            raise RuntimeError("ScaNN deleted a different number of points; index left inconsistent")
        self._row_ids = rows[:n]

    # ------------------------------------------------------------------ search
    def set_search_params(self, **params: Any) -> Self:
        """``leaves_to_search`` (partitions scored) and ``reorder`` (candidates re-scored exactly)."""
        unknown = set(params) - set(SEARCH_PARAMS)
        if unknown:
            raise ValueError(f"unknown search parameter(s) {sorted(unknown)}; expected some of {list(SEARCH_PARAMS)}")
        for name in SEARCH_PARAMS:
            if params.get(name) is not None:
                if int(params[name]) < 1:
                    raise ValueError(f"{name} must be a positive integer, got {params[name]!r}")
                self.params[name] = int(params[name])
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float32, ids (n, k) int64)``, best first, padded with id ``-1``.

        One query of a trained index takes a short path (ScaNN's own search and one ``take``
        for the ids; ScaNN itself refuses non-finite queries); anything else the general one."""
        s, q = self._searcher, np.asarray(queries, dtype=np.float32)
        k = check_k(k)
        one = q.shape == (self.dim,) or q.shape == (1, self.dim)
        if s is not None and one and k <= len(self._row_ids):
            v = q.reshape(self.dim)
            p = self.params
            try:  # ScaNN refuses NaN / infinite queries itself; the general path says why
                rows, dist = s.search(v, k, max(int(p["reorder"]), k), int(p["leaves_to_search"]))
            except RuntimeError:
                return super().search(queries, k)
            if len(rows) == k and math.isfinite(dist[0]):
                return dist.reshape(1, k), self._row_ids.take(rows).reshape(1, k)
        return super().search(queries, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._searcher is None:  # exact over the buffer
            scores = q @ self._buf_x.T
            if self.metric == "l2":
                sq = np.einsum("nd,nd->n", self._buf_x, self._buf_x)
                scores = np.maximum(np.einsum("nd,nd->n", q, q)[:, None] - 2 * scores + sq[None, :], 0)
            order = np.argsort(-scores if self.metric == "ip" else scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, order, 1).astype(np.float32), self._buf_ids[order]
        p = self.params
        rows, dist = self._searcher.search_batched(
            q, k, max(int(p["reorder"]), k), int(p["leaves_to_search"]), False, 0
        )
        rows, dist = np.asarray(rows, np.int64), np.asarray(dist, np.float32)
        found = ~np.isnan(dist)  # ScaNN pads short rows with point 0 and NaN
        return np.where(found, dist, 0).astype(np.float32), np.where(found, self._row_ids.take(rows), -1)

    # ------------------------------------------------------------------ vectors, memory
    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        raise VectorIndexError("a 'scann' index cannot reconstruct: ScaNN offers no call to read its vectors back")

    def memory_bytes(self) -> int:
        """An estimate from ScaNN's layout: float vectors for re-scoring (4·dim B), 4-bit codes
        (dim / dims_per_block / 2 B), the leaf of each point (4 B) and its id (8 B) per vector,
        plus the leaf centres and codebooks; the buffer before the first build."""
        n, d = len(self._row_ids), self.dim
        per_vector = 4 * d + d / int(self.params["dims_per_block"]) / 2 + 4 + 8
        fixed = 4 * d * int(self.params["n_leaves"] or 0) + 64 * d if self._searcher is not None else 0
        return int(n * per_vector + fixed + self._buf_x.nbytes + self._buf_ids.nbytes + self._ids.nbytes)

    # ------------------------------------------------------------------ persistence
    def _versions(self) -> dict[str, str]:
        import importlib.metadata

        return {"scann": importlib.metadata.version("scann")}

    def _write_files(self, folder: Path) -> dict[str, dict[str, str]]:
        files: dict[str, dict[str, str]] = {}
        if self._searcher is not None:
            searcher = self._searcher

            def pack(tmp: Path) -> None:
                with tempfile.TemporaryDirectory(dir=folder, prefix=".scann-") as assets:
                    searcher.serialize(assets, True)  # relative paths: loadable from anywhere
                    with tarfile.open(tmp, "w") as tar:
                        for f in sorted(Path(assets).iterdir()):
                            tar.add(f, arcname=f.name)

            files["searcher"] = write_checksummed(folder, "searcher", ".tar", pack)
        files["rowids"] = write_npy(folder, "rowids", self._row_ids)
        files["bufx"] = write_npy(folder, "bufx", self._buf_x)
        files["bufids"] = write_npy(folder, "bufids", self._buf_ids)
        return files

    @classmethod
    def from_manifest(cls, path: Path, manifest: Manifest, options: OpenOptions) -> Self:
        """The saved searcher (unpacked to a temporary folder while ScaNN reads it), table and buffer."""
        blobs = manifest.verified_files(path, required=("rowids", "bufx", "bufids"))
        self = cls(manifest.dim, manifest.metric, fingerprint=manifest.fingerprint, **manifest.params)
        self._row_ids = np.asarray(load_npy(blobs["rowids"]), np.int64)
        self._buf_x = np.asarray(load_npy(blobs["bufx"]), np.float32)
        self._buf_ids = np.asarray(load_npy(blobs["bufids"]), np.int64)
        if "searcher" in blobs:
            try:
                with tempfile.TemporaryDirectory(prefix="vs-scann-") as assets:
                    with tarfile.open(blobs["searcher"]) as tar:
                        tar.extractall(assets, filter="data")
                    pbtxt = (Path(assets) / "scann_assets.pbtxt").read_text()
                    self._searcher = _pybind().scann_pybind.ScannNumpy(assets, pbtxt)
            except (OSError, tarfile.TarError, RuntimeError) as e:
                raise IndexCorruptedError(f"cannot read the ScaNN searcher at {blobs['searcher']}: {e}") from None
            if self._searcher.size() != len(self._row_ids):
                raise IndexCorruptedError(f"ScaNN holds {self._searcher.size()} points, its table {len(self._row_ids)}")
        elif len(self._row_ids):
            raise IndexCorruptedError(f"{path / 'manifest.json'} names no ScaNN searcher for {len(self._row_ids)} rows")
        if self._buf_x.shape != (len(self._buf_ids), self.dim):
            raise IndexCorruptedError(f"the buffer at {path} does not match its ids")
        self._ids = np.sort(np.concatenate([self._row_ids, self._buf_ids]))
        self._check_count(path, manifest)
        return self
