"""The nearest-neighbour service: one ``VectorIndex`` interface over exact and approximate search.

``VectorIndex(dim, kind="flat", metric="ip", **params)`` wraps

=========  ===============================================================  ==========================
kind       what it is                                                       params (defaults)
=========  ===============================================================  ==========================
flat       exact linear scan, O(N·D) per query (FAISS ``IndexFlat``)         --
ivf        clustering: k-means cells, scan ``nprobe`` of them (IVF-Flat)      nlist (auto), nprobe=16
ivfpq      IVF + product-quantised codes of ``m`` bytes; optional exact       nlist, nprobe=16, m=16,
           re-ranking of ``rerank``×k candidates from the float vectors      nbits=8, rerank=0
hnsw       graph: hierarchical navigable small world (``IndexHNSWFlat``)     M=32, ef_construction=40,
                                                                            ef_search=64
lsh        random-hyperplane hashing to ``nbits`` bits, Hamming ranking       nbits=256, rerank=0
tree       scikit-learn KD-tree / ball tree (exact, tree-based family)       algorithm="kd_tree",
                                                                            leaf_size=40
<string>   any FAISS ``index_factory`` string, e.g. ``"IVF256,PQ16"``         --
=========  ===============================================================  ==========================

Conventions
-----------
- ``embeddings`` / ``queries``: ``(n, dim)`` float32, finite.  With ``metric="ip"`` (the
  course default) they should be L2-normalised, so the inner product is the cosine
  similarity; the ``tree`` kind requires it (it ranks by Euclidean distance, which orders
  unit vectors exactly like the inner product).
- ``ids``: ``(n,)`` int64, ``>= 0``, unique — the image ids of the platform database.
- ``search(queries, k) -> (scores, ids)``: ``(n, k)`` float32 and ``(n, k)`` int64, best
  first.  ``metric="ip"``: scores are similarities (higher is better); ``metric="l2"``:
  squared Euclidean distances (lower is better).  ``lsh`` without re-ranking reports the
  SimHash estimate ``cos(pi * hamming / nbits)`` of the cosine.  **Padding**: when fewer
  than ``k`` results exist (``k > len(index)``, an empty index, or an approximate index
  that found fewer candidates) the missing entries have id ``-1`` and score ``-inf``
  (``ip``) or ``+inf`` (``l2``), so they always sort last.
- Indexes that need training (``ivf``, ``ivfpq``, factory strings with IVF/PQ) train on
  the first ``add`` (or an explicit ``train``) and raise ``ValueError`` naming the minimum
  when given too few vectors.  Vectors added later are assigned to the trained cells.
- ``remove(ids)`` deletes in place where FAISS supports it; HNSW graphs cannot delete, so
  the graph is rebuilt from the stored vectors (costly: batch deletions).

Persistence: ``save(path)`` writes a *directory* holding the data file(s), named by their
checksum, and ``manifest.json`` (kind, dim, metric, count, fingerprint, params, library
versions, sha256 of every data file), which is written last.  A save killed at any point
leaves the previous manifest pointing at the previous, untouched data files.
``VectorIndex.load(path, expected_dim=, expected_fingerprint=)`` verifies the checksums and
refuses corrupted files and indexes built for another encoder.

Indexing pipeline: ``sync_index(encoder, conn, index_path)`` embeds every image of the
``images`` table that is not yet indexed, removes ids no longer in the table, and saves;
``python -m vs_lib index`` runs it for a saved encoder.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import __version__, config

KINDS = ("flat", "ivf", "ivfpq", "hnsw", "lsh", "tree")
METRICS = ("ip", "l2")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DEFAULT_MODEL = "self_supervised"

__all__ = [
    "KINDS",
    "create",
    "load",
    "VectorIndex",
    "VectorIndexError",
    "IndexMismatchError",
    "IndexCorruptedError",
    "default_index_path",
    "sync_index",
    "recall_at_k",
    "exact_search",
    "clustered_vectors",
    "measure_search",
]


class VectorIndexError(ValueError):
    """Base class of the index's user-facing errors."""


class IndexMismatchError(VectorIndexError):
    """A saved index does not match the encoder in use (dimension or fingerprint)."""


class IndexCorruptedError(VectorIndexError):
    """A saved index file fails its checksum or cannot be read."""


_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 16, "train_size": None},
    "ivfpq": {"nlist": None, "nprobe": 16, "m": 16, "nbits": 8, "rerank": 0, "train_size": None},
    "hnsw": {"M": 32, "ef_construction": 40, "ef_search": 64},
    "lsh": {"nbits": 256, "rerank": 0},
    "tree": {"algorithm": "kd_tree", "leaf_size": 40},
}
_SEARCH_PARAMS = {"nprobe", "ef_search", "rerank"}


def _faiss():
    import faiss

    return faiss


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def auto_nlist(n: int) -> int:
    """Number of IVF cells for ``n`` training vectors: about ``4·sqrt(n)`` (a power of two),
    capped so that every cell gets at least 39 training points (FAISS's k-means advice)."""
    return max(1, min(_pow2_floor(4 * math.sqrt(max(n, 1))), _pow2_floor(n / 39)))


class VectorIndex:
    """One interface over exact and approximate nearest-neighbour indexes (see module doc)."""

    def __new__(cls, dim: int | None = None, kind: str = "flat", *args: Any, **kwargs: Any):
        # kind="milvus": the Milvus backend (vs_lib.milvus_index) behind this same interface
        if cls is VectorIndex and kind == "milvus":
            from ..milvus_index import MilvusIndex

            return MilvusIndex(dim, kind, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, dim: int, kind: str = "flat", metric: str = "ip", *, fingerprint: str | None = None, **params: Any):
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.dim = int(dim)
        self.kind = str(kind)
        self.metric = metric
        self.fingerprint = fingerprint
        if self.kind in KINDS:
            unknown = set(params) - set(_KIND_DEFAULTS[self.kind])
            if unknown:
                raise ValueError(
                    f"unknown parameter(s) {sorted(unknown)} for kind {self.kind!r}; "
                    f"expected some of {sorted(_KIND_DEFAULTS[self.kind])}"
                )
            self.params = {**_KIND_DEFAULTS[self.kind], **params}
        else:
            if params:
                raise ValueError(f"a FAISS factory string takes no extra parameters, got {sorted(params)}")
            self.params = {}
        if self.kind == "lsh" and metric != "ip":
            raise ValueError("lsh hashes angles: it supports metric='ip' (on L2-normalised vectors) only")
        self._ids = np.empty(0, dtype=np.int64)  # sorted ids present in the index
        self._vectors: np.ndarray | None = None  # rows aligned with self._ids (tree, re-ranking)
        if self._keeps_vectors:
            self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._index = None  # FAISS index (None for tree, or until trained for auto-nlist IVF)
        self._tree = None
        self._labels = None  # cached (inner, id_map as int64) for IDMap2 searches, see _search_faiss
        self._native_ids = False  # True when the FAISS index stores ids itself (IVF)
        if self.kind != "tree" and not (self.kind in ("ivf", "ivfpq") and self.params["nlist"] is None):
            self._index = self._make_faiss(self.params.get("nlist"))
        self.build_seconds = 0.0

    # ------------------------------------------------------------------ construction
    @property
    def _keeps_vectors(self) -> bool:
        return self.kind == "tree" or int(self.params.get("rerank") or 0) > 0

    def _faiss_metric(self):
        faiss = _faiss()
        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def _make_faiss(self, nlist: int | None):
        faiss = _faiss()
        d, metric, p = self.dim, self._faiss_metric(), self.params
        if self.kind == "flat":
            base = faiss.IndexFlat(d, metric)
        elif self.kind == "hnsw":
            base = faiss.IndexHNSWFlat(d, int(p["M"]), metric)
            base.hnsw.efConstruction = int(p["ef_construction"])
            base.hnsw.efSearch = int(p["ef_search"])
        elif self.kind == "lsh":
            base = faiss.IndexLSH(d, int(p["nbits"]), True, False)
        elif self.kind in ("ivf", "ivfpq"):
            quantizer = faiss.IndexFlat(d, metric)
            if self.kind == "ivf":
                ivf = faiss.IndexIVFFlat(quantizer, d, int(nlist), metric)
            else:
                if d % int(p["m"]):
                    raise ValueError(f"ivfpq: m={p['m']} sub-quantizers must divide dim={d}")
                ivf = faiss.IndexIVFPQ(quantizer, d, int(nlist), int(p["m"]), int(p["nbits"]), metric)
            ivf.own_fields = True
            quantizer.this.disown()
            ivf.nprobe = int(p["nprobe"])
            self.params["nlist"] = int(nlist)
            self._native_ids = True
            return ivf
        else:
            try:
                base = faiss.index_factory(d, self.kind, metric)
            except RuntimeError as e:
                raise ValueError(
                    f"kind must be one of {KINDS} or a FAISS index_factory string; "
                    f"FAISS could not parse {self.kind!r}: {str(e).splitlines()[0]}"
                ) from None
            if isinstance(base, faiss.IndexIDMap) or faiss.try_extract_index_ivf(base) is not None:
                self._native_ids = True
                return base
        wrapped = faiss.IndexIDMap2(base)
        wrapped.own_fields = True
        base.this.disown()
        return wrapped

    # ------------------------------------------------------------------ validation
    def _check_vectors(self, x, what: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape (n, {self.dim}), got {tuple(np.shape(x))}")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        return x

    def _check_ids(self, ids, n: int | None = None) -> np.ndarray:
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
        uniq = np.unique(arr)
        if len(uniq) != len(arr):
            s = np.sort(arr)
            dup = np.unique(s[1:][s[1:] == s[:-1]])
            raise ValueError(f"ids contain duplicates, e.g. {dup[:5].tolist()}")
        return arr

    # ------------------------------------------------------------------ training
    @property
    def is_trained(self) -> bool:
        if self.kind == "tree":
            return True
        return self._index is not None and bool(self._index.is_trained)

    def min_training_vectors(self, nlist: int | None = None) -> int:
        """The fewest vectors ``train`` accepts for this kind (0 if no training is needed)."""
        if self.kind in ("ivf", "ivfpq"):
            nl = nlist or self.params.get("nlist") or 1
            need = int(nl)
            if self.kind == "ivfpq":
                need = max(need, 2 ** int(self.params["nbits"]))
            return need
        if self._index is not None and not self._index.is_trained:
            faiss = _faiss()
            ivf = faiss.try_extract_index_ivf(self._index)
            return int(ivf.nlist) if ivf is not None else 1
        return 0

    def train(self, embeddings) -> "VectorIndex":
        """Train (k-means cells, PQ codebooks) on a sample ``(n, dim)``; no-op when not needed."""
        x = self._check_vectors(embeddings, "training embeddings")
        if self.is_trained:
            return self
        nlist = self.params.get("nlist") or (auto_nlist(len(x)) if self.kind in ("ivf", "ivfpq") else None)
        need = self.min_training_vectors(nlist)
        if len(x) < need:
            raise ValueError(
                f"{self.kind} index (nlist={self.params.get('nlist')}) needs at least {need} training vectors, "
                f"got {len(x)}; add more vectors in the first add(), call train() with a larger sample, "
                f"or choose a smaller nlist"
            )
        if self._index is None:  # auto nlist, now that the training set size is known
            self._index = self._make_faiss(nlist)
        limit = self.params.get("train_size")
        if limit and len(x) > limit:
            rng = np.random.default_rng(0)
            x = x[np.sort(rng.choice(len(x), int(limit), replace=False))]
        t0 = time.perf_counter()
        try:
            with _single_threaded(self.kind == "ivfpq" or "PQ" in self.kind):
                self._index.train(x)
        except RuntimeError as e:
            raise ValueError(f"training the {self.kind} index on {len(x)} vectors failed: {str(e).splitlines()[0]}") from None
        self.build_seconds += time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ add / remove
    def _check_new(self, embeddings, ids) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(embeddings, ids)`` for an add; refuses ids already stored."""
        x = self._check_vectors(embeddings, "embeddings")
        ids = self._check_ids(ids, len(x))
        present = ids[np.isin(ids, self._ids, assume_unique=True)]
        if present.size:
            raise ValueError(f"ids already in the index: {present[:5].tolist()}{' ...' if present.size > 5 else ''}; remove them first")
        return x, ids

    def _check_present(self, ids) -> np.ndarray:
        """Validated ids for a removal; refuses ids that are not stored."""
        ids = self._check_ids(ids)
        missing = ids[~np.isin(ids, self._ids, assume_unique=True)]
        if missing.size:
            raise ValueError(f"ids not in the index: {missing[:5].tolist()}{' ...' if missing.size > 5 else ''}")
        return ids

    def add(self, embeddings, ids) -> "VectorIndex":
        """Add ``(n, dim)`` float32 embeddings under unique int64 ``ids`` not yet in the index."""
        x, ids = self._check_new(embeddings, ids)
        if len(x) == 0:
            return self
        if self.kind == "tree" and self.metric == "ip":
            norms = np.linalg.norm(x, axis=1)
            if np.abs(norms - 1).max() > 1e-3:
                raise ValueError("the tree index with metric='ip' needs L2-normalised embeddings (it ranks by Euclidean distance)")
        if not self.is_trained:
            self.train(x)
        t0 = time.perf_counter()
        if self._index is not None:
            self._index.add_with_ids(x, ids)
        self._tree = self._labels = None
        new_ids = np.concatenate([self._ids, ids])
        order = np.argsort(new_ids, kind="stable")
        if self._vectors is not None:
            self._vectors = np.concatenate([np.asarray(self._vectors), x])[order]
        self._ids = new_ids[order]
        self.build_seconds += time.perf_counter() - t0
        return self

    def remove(self, ids) -> int:
        """Remove ``ids`` (all must be present) and return how many were removed."""
        ids = self._check_present(ids)
        if ids.size == 0:
            return 0
        keep = ~np.isin(self._ids, ids, assume_unique=True)
        if self._index is not None:
            faiss = _faiss()
            try:
                removed = self._index.remove_ids(faiss.IDSelectorBatch(ids))
            except RuntimeError:  # e.g. HNSW: no deletion in place -> rebuild from stored vectors
                removed = self._rebuild_without(ids)
            if removed != len(ids):
                raise RuntimeError(f"FAISS removed {removed} of {len(ids)} ids; index left inconsistent")
        self._ids = self._ids[keep]
        if self._vectors is not None:
            self._vectors = np.asarray(self._vectors)[keep]
        self._tree = self._labels = None
        return int(len(ids))

    def _rebuild_without(self, ids: np.ndarray) -> int:
        faiss = _faiss()
        idmap = self._index
        inner = faiss.downcast_index(idmap.index)
        all_ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)
        vecs = inner.reconstruct_n(0, idmap.ntotal)
        keep = ~np.isin(all_ids, ids)
        fresh = faiss.clone_index(idmap)
        fresh.reset()
        if keep.any():
            fresh.add_with_ids(np.ascontiguousarray(vecs[keep]), all_ids[keep])
        self._index = fresh
        self._labels = None
        return int((~keep).sum())

    # ------------------------------------------------------------------ search
    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None, rerank: int | None = None) -> "VectorIndex":
        """Change query-time knobs without rebuilding: IVF ``nprobe``, HNSW ``ef_search``,
        and the re-ranking factor ``rerank`` (only for indexes built with ``rerank > 0``)."""
        faiss = _faiss()
        if nprobe is not None:
            if self._index is None or faiss.try_extract_index_ivf(self._index) is None:
                raise ValueError(f"nprobe applies to IVF indexes, not {self.kind!r}")
            faiss.extract_index_ivf(self._index).nprobe = int(nprobe)
            if "nprobe" in self.params:
                self.params["nprobe"] = int(nprobe)
        if ef_search is not None:
            if self.kind != "hnsw":
                raise ValueError(f"ef_search applies to hnsw indexes, not {self.kind!r}")
            faiss.downcast_index(self._index.index).hnsw.efSearch = int(ef_search)
            self.params["ef_search"] = int(ef_search)
        if rerank is not None:
            if self._vectors is None or self.kind == "tree":
                raise ValueError("rerank can be changed only on an index built with rerank > 0")
            if int(rerank) < 1:
                raise ValueError("rerank must be >= 1 on an index that keeps its vectors")
            self.params["rerank"] = int(rerank)
        return self

    def _pad_value(self) -> float:
        return -np.inf if self.metric == "ip" else np.inf

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query: ``(scores (n, k) float32, ids (n, k) int64)``.

        Best first.  Missing results (``k > len(self)``, empty index) have id ``-1`` and score
        ``-inf`` for ``ip`` / ``+inf`` for ``l2``.
        """
        q = self._check_vectors(queries, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n, total = len(q), len(self._ids)
        kk = min(int(k), total)
        if kk == 0 or n == 0:
            return np.full((n, k), self._pad_value(), np.float32), np.full((n, k), -1, np.int64)
        if self.kind == "tree":
            D, I = self._search_tree(q, kk)
        elif self._vectors is not None:  # candidates from the compressed index, exact re-ranking
            kc = min(total, kk * int(self.params["rerank"]))
            _, cand = self._search_faiss(q, kc)
            D, I = self._rerank(q, cand, kk)
        else:
            D, I = self._search_faiss(q, kk)
            if self.kind == "lsh":
                D = np.cos(np.pi * D / float(self.params["nbits"])).astype(np.float32)
        if kk == k:
            missing = I < 0
            if missing.any():
                D[missing] = self._pad_value()
            return D, I
        scores = np.full((n, k), self._pad_value(), np.float32)
        out = np.full((n, k), -1, np.int64)
        scores[:, :kk], out[:, :kk] = D, I
        out_missing = out < 0
        scores[out_missing] = self._pad_value()
        return scores, out

    # FAISS's flat search multiplies queries by blocks of this many database rows; its default
    # (1024) leaves most of the BLAS throughput unused on a 2-core machine (see benchmarks/ann.py).
    BLAS_DATABASE_BLOCK = 16384

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        index = self._index
        if isinstance(index, faiss.IndexIDMap):
            # search the wrapped index and translate labels in NumPy: IndexIDMap's own search
            # translates them in an OpenMP loop whose thread wake-up dominates single queries
            if self._labels is None:
                # a trailing -1 makes FAISS's "no result" label (-1) translate to -1 in one take
                ids_ = np.append(faiss.vector_to_array(index.id_map).astype(np.int64), -1)
                self._labels = (faiss.downcast_index(index.index), ids_)
            index, labels = self._labels
        else:
            labels = None
        # Fewer than 20 queries on a scanning index (flat, LSH, PQ codes): FAISS scans without
        # BLAS, memory-bound, and its OpenMP barrier costs more than the second thread gains --
        # on a shared machine up to 100x more (measured: 0.3 ms vs 82 ms per query at N=30k),
        # so small batches run on one thread.  Graph and IVF searches of one query open no
        # parallel region, and switching the thread count would cost them ~40 us, so they don't.
        if len(q) < 20 and isinstance(index, faiss.IndexFlatCodes):
            with _single_threaded():
                D, I = self._search_scan(index, q, k)
        else:
            D, I = self._search_scan(index, q, k)
        if labels is not None:
            I = labels.take(I)
        return D, I

    def _search_scan(self, index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if not isinstance(index, faiss.IndexFlat):
            return index.search(q, k)
        before = faiss.cvar.distance_compute_blas_database_bs
        faiss.cvar.distance_compute_blas_database_bs = max(before, self.BLAS_DATABASE_BLOCK)
        try:
            return index.search(q, k)
        finally:
            faiss.cvar.distance_compute_blas_database_bs = before

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._ids, ids)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        valid = cand >= 0
        rows = self._rows(np.where(valid, cand, self._ids[0]))
        vecs = self._vectors[rows.ravel()].reshape(*rows.shape, self.dim)
        if self.metric == "ip":
            s = np.einsum("nd,ncd->nc", q, vecs)
            s[~valid] = -np.inf
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        else:
            s = ((vecs - q[:, None, :]) ** 2).sum(-1)
            s[~valid] = np.inf
            order = np.argsort(s, axis=1, kind="stable")[:, :k]
        D = np.take_along_axis(s, order, 1).astype(np.float32)
        I = np.take_along_axis(np.where(valid, cand, -1), order, 1)
        return D, I

    def _search_tree(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._tree is None:
            from sklearn.neighbors import BallTree, KDTree

            cls = {"kd_tree": KDTree, "ball_tree": BallTree}.get(self.params["algorithm"])
            if cls is None:
                raise ValueError(f"tree algorithm must be 'kd_tree' or 'ball_tree', got {self.params['algorithm']!r}")
            t0 = time.perf_counter()
            self._tree = cls(np.asarray(self._vectors), leaf_size=int(self.params["leaf_size"]))
            self.build_seconds += time.perf_counter() - t0
        dist, rows = self._tree.query(q, k=k)
        d2 = (dist**2).astype(np.float32)
        scores = 1.0 - d2 / 2.0 if self.metric == "ip" else d2
        return scores.astype(np.float32), self._ids[rows]

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        return int(len(self._ids))

    def ids(self) -> np.ndarray:
        """The stored ids, sorted ascending, ``(len,)`` int64 (a copy)."""
        return self._ids.copy()

    def reconstruct(self, ids) -> np.ndarray:
        """The stored float vectors of ``ids``, ``(n, dim)`` float32, in the order given.

        Available when the index keeps exact vectors: ``flat``, ``hnsw``, ``tree`` and any kind
        built with ``rerank > 0``.  Raises ``KeyError`` for ids not in the index and
        ``VectorIndexError`` for kinds that keep only codes (``ivf``, ``ivfpq``, ``lsh``).
        """
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        missing = ids[~np.isin(ids, self._ids)]
        if missing.size:
            raise KeyError(f"ids not in the index: {missing[:5].tolist()}")
        if self._vectors is not None:
            return np.asarray(self._vectors[self._rows(ids)], dtype=np.float32)
        faiss = _faiss()
        if isinstance(self._index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(self._index.index)
            if isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat)):
                if ids.size == 0:
                    return np.empty((0, self.dim), np.float32)
                return self._index.reconstruct_batch(np.ascontiguousarray(ids)).astype(np.float32)
        raise VectorIndexError(f"a {self.kind!r} index keeps no exact float vectors to reconstruct")

    def __contains__(self, image_id) -> bool:
        i = np.searchsorted(self._ids, image_id)
        return bool(i < len(self._ids) and self._ids[i] == image_id)

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self.dim}, kind={self.kind!r}, metric={self.metric!r}, n={len(self)}, params={self.params})"

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM: vectors or codes, ids, graph links, centroids, and
        the float vectors kept for re-ranking / the tree (not counted when memory-mapped from
        disk, see ``load(mmap_vectors=True)``)."""
        total = 0
        if self._index is not None:
            total += _faiss_bytes(self._index)
        else:
            total += self._ids.nbytes
        if self._vectors is not None and not isinstance(self._vectors, np.memmap):
            total += self._vectors.nbytes
        if self._tree is not None:
            total += sum(a.nbytes for a in self._tree.get_arrays()[1:] if hasattr(a, "nbytes"))
        return int(total)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save to the directory ``path`` (created): data files named by checksum, then
        ``manifest.json`` last.  Interrupting it leaves the previous save loadable."""
        faiss = _faiss()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"index path {path} exists and is not a directory (an index is saved as a directory)")
        path.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        if self._index is not None:
            files["index"] = _write_checksummed(path, "index", ".faiss", lambda tmp: faiss.write_index(self._index, str(tmp)))
        if self._vectors is not None or self._index is None:
            files["ids"] = _write_checksummed(path, "ids", ".npy", lambda tmp: _save_npy(tmp, self._ids))
        if self._vectors is not None:
            files["vectors"] = _write_checksummed(path, "vectors", ".npy", lambda tmp: _save_npy(tmp, np.asarray(self._vectors)))
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "count": len(self),
            "fingerprint": self.fingerprint,
            "params": self.params,
            "trained": self.is_trained,
            "files": {role: {"name": name, "sha256": sha} for role, (name, sha) in files.items()},
            "versions": _library_versions(self.kind),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_manifest(path, manifest)
        keep = {name for name, _ in files.values()} | {MANIFEST}
        for f in path.iterdir():
            if f.name not in keep and re.match(r"^(index|ids|vectors)-[0-9a-f]{16}\.(faiss|npy)$", f.name):
                f.unlink(missing_ok=True)
        return path

    @staticmethod
    def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
        """The manifest of a saved index directory (no data read)."""
        path = Path(path)
        mpath = path / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"no saved index at {path}")
        if not mpath.exists():
            raise FileNotFoundError(f"{path} holds no {MANIFEST}: not a saved VectorIndex (or its first save never finished)")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexCorruptedError(f"{mpath} is not valid JSON: {e}") from None
        for key in ("kind", "dim", "metric", "count", "files"):
            if key not in manifest:
                raise IndexCorruptedError(f"{mpath} lacks the field {key!r}")
        return manifest

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expected_dim: int | None = None,
        expected_fingerprint: str | None = None,
        *,
        mmap_vectors: bool = False,
    ) -> "VectorIndex":
        """Load a saved index, verifying checksums, dimension and encoder fingerprint.

        Raises ``FileNotFoundError`` (nothing saved), ``IndexMismatchError`` (built for a
        different dimension / encoder) or ``IndexCorruptedError`` (checksum or read failure).
        ``mmap_vectors=True`` leaves the float vectors kept for re-ranking on disk.
        """
        faiss = _faiss()
        path = Path(path)
        m = cls.read_manifest(path)
        if m["kind"] == "milvus":  # the vectors live in a Milvus store named by the manifest
            from ..milvus_index import MilvusIndex

            return MilvusIndex.load(path, expected_dim, expected_fingerprint)
        if expected_dim is not None and int(m["dim"]) != int(expected_dim):
            raise IndexMismatchError(
                f"index at {path} has dimension {m['dim']}, but the encoder in use produces {expected_dim}; rebuild the index"
            )
        if expected_fingerprint is not None and m.get("fingerprint") != expected_fingerprint:
            raise IndexMismatchError(
                f"index at {path} was built with encoder fingerprint {m.get('fingerprint')!r}, "
                f"not {expected_fingerprint!r} (the encoder in use); rebuild the index"
            )
        blobs: dict[str, Path] = {}
        for role, info in m["files"].items():
            f = path / info["name"]
            if not f.exists():
                raise IndexCorruptedError(f"{f} named by the manifest is missing")
            if config.sha256_file(f) != info["sha256"]:
                raise IndexCorruptedError(f"{f} fails its sha256 checksum: the file is corrupted or was modified")
            blobs[role] = f
        self = cls.__new__(cls)
        self.dim, self.kind, self.metric = int(m["dim"]), m["kind"], m["metric"]
        self.fingerprint, self.params = m.get("fingerprint"), dict(m.get("params") or {})
        self._tree, self._index, self._vectors, self._native_ids, self._labels = None, None, None, False, None
        self.build_seconds = 0.0
        try:
            if "index" in blobs:
                self._index = faiss.read_index(str(blobs["index"]))
                self._native_ids = not isinstance(self._index, faiss.IndexIDMap)
                if self._index.d != self.dim:
                    raise IndexCorruptedError(f"{blobs['index']} holds dimension {self._index.d}, manifest says {self.dim}")
            if "ids" in blobs:
                self._ids = np.load(blobs["ids"], allow_pickle=False).astype(np.int64)
            else:
                self._ids = np.sort(_faiss_ids(self._index))
            if "vectors" in blobs:
                self._vectors = np.load(blobs["vectors"], mmap_mode="r" if mmap_vectors else None, allow_pickle=False)
        except RuntimeError as e:  # FAISS could not parse the file
            raise IndexCorruptedError(f"cannot read the index at {path}: {str(e).splitlines()[0]}") from None
        if len(self._ids) != int(m["count"]) or (self._index is not None and self._index.ntotal != int(m["count"])):
            raise IndexCorruptedError(f"index at {path} holds {len(self._ids)} vectors, manifest says {m['count']}")
        return self


# ---------------------------------------------------------------------- entry points
def create(dim: int, kind: str = "flat", metric: str = "ip", *, fingerprint: str | None = None, **params: Any) -> VectorIndex:
    """A new, empty index of ``kind`` for ``dim``-dimensional vectors (see the module doc)."""
    return VectorIndex(dim, kind, metric, fingerprint=fingerprint, **params)


def load(
    path: str | os.PathLike,
    expected_dim: int | None = None,
    expected_fingerprint: str | None = None,
    *,
    mmap_vectors: bool = False,
) -> VectorIndex:
    """Load a saved index of any kind, verifying checksums, dimension and encoder fingerprint."""
    return VectorIndex.load(path, expected_dim, expected_fingerprint, mmap_vectors=mmap_vectors)


# ---------------------------------------------------------------------- helpers: threads
@contextlib.contextmanager
def _single_threaded(enabled: bool = True):
    """Run FAISS with one OpenMP thread inside the block (then restore the previous count).

    PQ training runs hundreds of tiny k-means problems (256 centroids in 4-16 dimensions);
    their OpenMP parallel regions cost more than they save, and on a machine shared with
    other processes two spinning threads made training ~7x slower than one (measured).
    """
    if not enabled:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# ---------------------------------------------------------------------- helpers: files
def _save_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _write_checksummed(folder: Path, stem: str, suffix: str, writer) -> tuple[str, str]:
    """Write a data file via ``writer(tmp)``, then rename it to ``<stem>-<sha16><suffix>``."""
    partial = folder / f".{stem}.partial"
    with config.atomic_path(partial) as tmp:  # fsync + rename: .partial is complete or absent
        writer(tmp)
    sha = config.sha256_file(partial)
    name = f"{stem}-{sha[:16]}{suffix}"
    os.replace(partial, folder / name)
    return name, sha


def _write_manifest(folder: Path, manifest: dict) -> None:
    config.write_json_atomic(folder / MANIFEST, manifest)


def _library_versions(kind: str) -> dict[str, str]:
    import faiss

    versions = {"vs_lib": __version__, "numpy": np.__version__, "faiss": faiss.__version__}
    if kind == "tree":
        import sklearn

        versions["scikit-learn"] = sklearn.__version__
    return versions


# ---------------------------------------------------------------------- helpers: FAISS
def _faiss_ids(index) -> np.ndarray:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise IndexCorruptedError("cannot recover the ids of this FAISS index")
    inv = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        size = inv.list_size(lst)
        if size:
            ptr = inv.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64).copy())
            inv.release_ids(lst, ptr)
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _faiss_bytes(index) -> int:
    """RAM held by a FAISS index, from its data structures (falls back to its serialized size)."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        # id_map (8 B/vector) + the reverse hash map rebuilt in RAM (~ 32 B/entry in libstdc++)
        return 8 * index.ntotal + 32 * index.ntotal + _faiss_bytes(index.index)
    if isinstance(index, faiss.IndexIDMap):
        return 8 * index.ntotal + _faiss_bytes(index.index)
    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        graph = 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        return graph + _faiss_bytes(index.storage)
    if isinstance(index, faiss.IndexIVF):
        inv = index.invlists
        lists = sum(inv.list_size(i) for i in range(index.nlist)) * (index.code_size + 8)
        extra = 0
        if isinstance(index, faiss.IndexIVFPQ):
            extra = index.pq.centroids.size() * 4
        return lists + _faiss_bytes(index.quantizer) + extra
    if isinstance(index, faiss.IndexLSH):
        return index.ntotal * index.code_size + index.rrot.A.size() * 4 + index.thresholds.size() * 4
    if isinstance(index, faiss.IndexFlatCodes):
        extra = index.pq.centroids.size() * 4 if isinstance(index, faiss.IndexPQ) else 0
        return index.ntotal * index.code_size + extra
    return int(faiss.serialize_index(index).nbytes)


# ---------------------------------------------------------------------- evaluation helpers
def exact_search(database: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip") -> np.ndarray:
    """Ground-truth neighbour ids (row numbers) by brute force in NumPy, ``(n, k)`` int64.

    Independent of FAISS (plain matrix product), used for recall and in the tests.
    """
    database = np.asarray(database, np.float32)
    out = np.empty((len(queries), k), np.int64)
    sq = (database**2).sum(1) if metric == "l2" else None
    for s in range(0, len(queries), 1024):
        q = np.asarray(queries[s : s + 1024], np.float32)
        sim = q @ database.T
        if metric == "l2":
            sim = 2 * sim - sq[None, :]
        part = np.argpartition(-sim, min(k, sim.shape[1] - 1), axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, part, 1), axis=1, kind="stable")
        out[s : s + 1024] = np.take_along_axis(part, order, 1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Mean fraction of the true top-k ids found in the returned top-k (``-1`` never matches)."""
    found, truth = np.asarray(found), np.asarray(truth)
    k = k or truth.shape[1]
    hits = [len(np.intersect1d(f[:k][f[:k] >= 0], t[:k])) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k) if hits else float("nan")


def clustered_vectors(n: int, dim: int = 128, n_clusters: int = 1000, spread: float = 0.6, seed: int = 0,
                      chunk: int = 200_000) -> np.ndarray:
    """Synthetic clustered vectors, ``(n, dim)`` float32, L2-normalised (labelled *synthetic*
    wherever shown): Gaussian blobs around ``n_clusters`` random unit centres; ``spread`` is the
    within-cluster noise relative to the centre's norm (larger = harder)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        lab = rng.integers(0, n_clusters, m)
        x = centres[lab] + rng.standard_normal((m, dim), dtype=np.float32) * (spread / math.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


# ---------------------------------------------------------------------- indexing pipeline
def default_index_path(model_name: str = DEFAULT_MODEL, kind: str = "flat") -> Path:
    """Where the index of encoder ``model_name`` lives: ``data/index/<model>-<kind>/``."""
    safe_kind = re.sub(r"[^A-Za-z0-9_.-]+", "_", kind)
    return config.data_dir() / "index" / f"{model_name}-{safe_kind}"


def _image_batches(conn, ids: np.ndarray, batch: int) -> Iterable[tuple[np.ndarray, list]]:
    """Yield (ids, images) chunks; corpus ids come from the Fashion-MNIST arrays, others from
    ``data.load_image``."""
    from .. import data

    corpus_images = None  # FashionMNIST.images concatenates on every access: take it once
    for s in range(0, len(ids), batch):
        chunk = ids[s : s + batch]
        corpus = chunk < 70_000
        images: list = [None] * len(chunk)
        if corpus.any():
            if corpus_images is None:
                corpus_images = data.load_fashion_mnist().images
            for j in np.flatnonzero(corpus):
                images[j] = corpus_images[chunk[j]]
        for j in np.flatnonzero(~corpus):
            images[j] = data.load_image(conn, int(chunk[j]))
        yield chunk, images


def _embed(encoder, images: list, batch_size: int) -> np.ndarray:
    shapes = {np.shape(im) for im in images}
    if len(shapes) == 1:
        return np.asarray(encoder.embed(np.stack(images), batch_size=batch_size), np.float32)
    return np.asarray(encoder.embed(images, batch_size=batch_size), np.float32)  # mixed sizes: a list


def sync_index(
    encoder,
    conn=None,
    index_path: str | os.PathLike | None = None,
    kind: str = "flat",
    *,
    rebuild: bool = False,
    batch_size: int = 256,
    chunk: int = 4096,
    progress: bool = True,
    **params: Any,
) -> dict[str, Any]:
    """Bring the index of ``encoder`` in line with the ``images`` table and save it.

    Embeds and adds every image id not yet indexed, removes indexed ids no longer in the
    table, saves atomically.  Returns ``{"added", "removed", "total", "path"}``.
    ``rebuild=True`` starts from an empty index (e.g. after retraining the encoder);
    otherwise an index built by a different encoder is refused (``IndexMismatchError``).
    """
    from tqdm.auto import tqdm

    from .. import data

    own_conn = conn is None
    conn = data.connect() if own_conn else conn
    try:
        name = getattr(encoder, "name", DEFAULT_MODEL)
        path = Path(index_path) if index_path is not None else default_index_path(name, kind)
        if (path / MANIFEST).exists() and not rebuild:
            idx = VectorIndex.load(path, expected_dim=encoder.dim, expected_fingerprint=encoder.fingerprint)
            if idx.kind != kind:
                raise ValueError(f"index at {path} is of kind {idx.kind!r}, not {kind!r}")
        else:
            idx = VectorIndex(encoder.dim, kind, fingerprint=encoder.fingerprint, **params)
        table_ids = np.asarray(data.read_table("images", conn)["id"], dtype=np.int64)
        stale = np.setdiff1d(idx.ids(), table_ids)
        new = np.setdiff1d(table_ids, idx.ids())
        if stale.size:
            idx.remove(stale)
        if new.size:
            if not idx.is_trained and new.size < idx.min_training_vectors():
                raise ValueError(f"{kind} index needs at least {idx.min_training_vectors()} images to train, the table has {new.size} new")
            bar = tqdm(total=len(new), desc=f"indexing ({name}, {kind})", unit="img", disable=not progress)
            pending_ids, pending_vecs = [], []
            first = not idx.is_trained
            for ids_chunk, images in _image_batches(conn, new, chunk):
                pending_ids.append(ids_chunk)
                pending_vecs.append(_embed(encoder, images, batch_size))
                bar.update(len(ids_chunk))
                if not first:  # trained indexes take vectors as they come
                    idx.add(np.concatenate(pending_vecs), np.concatenate(pending_ids))
                    pending_ids, pending_vecs = [], []
            if pending_ids:  # untrained: train on everything embedded, then add
                idx.add(np.concatenate(pending_vecs), np.concatenate(pending_ids))
            bar.close()
        if stale.size or new.size or not (path / MANIFEST).exists():
            idx.save(path)
        return {"added": int(new.size), "removed": int(stale.size), "total": len(idx), "path": str(path)}
    finally:
        if own_conn:
            conn.close()


# ---------------------------------------------------------------------- command line
CLI_HELP = "embed every image not yet indexed and add it to the vector index (removes deleted images)"


def cli_add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"encoder name, loads <models_dir>/<NAME>.pt (default {DEFAULT_MODEL})")
    parser.add_argument("--kind", default="flat", help=f"index kind: one of {', '.join(KINDS)} or a FAISS factory string (default flat)")
    parser.add_argument("--path", default=None, help="index directory (default data/index/<model>-<kind>)")
    parser.add_argument("--rebuild", action="store_true", help="start from an empty index (after retraining the encoder)")
    parser.add_argument("--rebuild-stale", action="store_true",
                        help="rebuild automatically when the saved index was made by another encoder (make index uses it)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")


def cli_main(args) -> int:
    from .. import data, models

    model_path = config.models_dir() / f"{args.model}.pt"
    if not model_path.exists():
        raise FileNotFoundError(f"no encoder at {model_path}; train it first: python -m vs_lib train --positives {args.model}")
    encoder = models.load_encoder(model_path)
    path = Path(args.path) if args.path else default_index_path(args.model, args.kind)
    conn = data.connect()
    try:
        try:
            result = sync_index(encoder, conn, path, kind=args.kind, rebuild=args.rebuild, batch_size=args.batch_size)
        except IndexMismatchError as e:
            if not args.rebuild_stale:
                raise
            # the encoder was retrained: embeddings of two models are not comparable, start over
            print(f"{e}\nthe encoder changed since this index was built: rebuilding it from scratch")
            result = sync_index(encoder, conn, path, kind=args.kind, rebuild=True, batch_size=args.batch_size)
    finally:
        conn.close()
    print(json.dumps(result, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------- measurement
def measure_search(index: "VectorIndex", queries: np.ndarray, truth: np.ndarray, k: int = 10,
                   single_budget: float = 0.5, max_single: int = 200) -> dict[str, float]:
    """Recall@k against ``truth`` ((n, k) true ids) and throughput of ``index`` on ``queries``.

    Returns ``{"recall", "batch_qps", "single_qps", "ms_per_query"}``: batched = all queries in
    one call; single = one query per call for up to ``single_budget`` seconds (the latency
    view; ``ms_per_query`` is its inverse).
    """
    queries = np.ascontiguousarray(queries, np.float32)
    t0 = time.perf_counter()
    _, found = index.search(queries, k)
    batch = len(queries) / max(time.perf_counter() - t0, 1e-9)
    index.search(queries[:1], k)  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < min(max_single, len(queries)) and (n < 3 or time.perf_counter() - t0 < single_budget):
        index.search(queries[n : n + 1], k)
        n += 1
    single = n / max(time.perf_counter() - t0, 1e-9)
    return {"recall": recall_at_k(found, truth, k), "batch_qps": batch, "single_qps": single, "ms_per_query": 1000.0 / single}
