"""The FAISS kinds: exact scan, IVF, IVF-PQ, HNSW, LSH and any ``index_factory`` string.

=========  ===============================================================  ==========================
kind       what it is                                                       params (defaults)
=========  ===============================================================  ==========================
flat       exact linear scan, O(N·D) per query (FAISS ``IndexFlat``)         --
ivf        clustering: k-means cells, scan ``nprobe`` of them (IVF-Flat)      nlist (auto), nprobe=16,
                                                                            train_size
ivfpq      IVF + product-quantised codes of ``m`` bytes; optional exact       nlist, nprobe=16, m=16,
           re-ranking of ``rerank``×k candidates from the float vectors      nbits=8, rerank=0, train_size
hnsw       graph: hierarchical navigable small world (``IndexHNSWFlat``)     M=32, ef_construction=40,
                                                                            ef_search=64
lsh        random-hyperplane hashing to ``nbits`` bits, Hamming ranking       nbits=256, rerank=0
<string>   any FAISS ``index_factory`` string, e.g. ``"IVF256,PQ16"``         --
=========  ===============================================================  ==========================

- ``metric="ip"``: scores are inner products (cosines of L2-normalised vectors), higher is
  better; ``"l2"``: squared Euclidean distances, lower is better.  ``lsh`` without re-ranking
  reports the SimHash estimate ``cos(pi * hamming / nbits)`` of the cosine.
- Kinds that need training (``ivf``, ``ivfpq``, factory strings with IVF/PQ) train on the
  first ``add`` (or an explicit ``train``) and refuse too few vectors naming the minimum;
  ``nlist=None`` picks :func:`auto_nlist` of the training set.  Later vectors are assigned
  to the trained cells.
- ``remove`` deletes in place where FAISS can; an HNSW graph cannot delete, so it is rebuilt
  from its stored vectors (costly: batch deletions).
- ``hnsw``: each vector is linked to about ``M`` near neighbours (``2·M`` on the bottom
  layer), a few also on sparser upper layers; a search walks greedily down the layers and,
  on the bottom one, keeps the ``ef_search`` best candidates seen.  ``ef_construction`` is
  that list while linking a new vector.  ann-benchmarks builds its HNSW entries with
  ``ef_construction=500`` and ``M`` from 4 to 96: a graph built with a long candidate list
  (``ef_construction`` ≥ 200) and a moderate ``M`` (12–16) needs fewer steps per query for
  the same recall than the defaults' dense, quickly built graph (``M=32,
  ef_construction=40``); ``benchmarks/ann.py --task fashion-mnist-784`` measures both
  against hnswlib.
- ``rerank > 0`` keeps the float vectors next to the codes and re-scores ``rerank × k``
  candidates exactly; ``load(..., mmap_vectors=True)`` leaves those vectors on disk.

Search path: a search of a kind without re-ranking or score conversion (all but ``lsh`` and
``rerank > 0``) spends little beyond FAISS's own work, which matters when a query takes a
tenth of a millisecond: the index is searched through FAISS's raw ``search_c`` with
preallocated outputs (FAISS's Python ``search`` checks and allocates them again); ids are
translated with one ``take`` on a cached table; one query is checked for NaN / infinity
*after* the search, on its best distance (a non-finite coordinate makes every distance
non-finite, so a finite best distance proves the query finite, and only a non-finite one
pays for the full test; batches are checked first); padding is looked for in the last
column only.  The results are exactly FAISS's.

Threads: FAISS uses OpenMP.  Call :func:`configure_faiss` once at start-up to choose the
thread count (and the BLAS block size of exact search) for the process; searches of fewer
than 20 queries on a scanning index run on one thread inside a ``threadpoolctl`` limit that
ends with the call.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from .base import BaseIndex, check_k, check_params, check_vectors, pad_value
from .errors import IndexCorruptedError
from .persistence import Manifest, OpenOptions, load_npy, write_checksummed

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

FAISS_KINDS = ("flat", "ivf", "ivfpq", "hnsw", "lsh")
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 16, "train_size": None},
    "ivfpq": {"nlist": None, "nprobe": 16, "m": 16, "nbits": 8, "rerank": 0, "train_size": None},
    "hnsw": {"M": 32, "ef_construction": 40, "ef_search": 64},
    "lsh": {"nbits": 256, "rerank": 0},
}
SEARCH_PARAMS = ("nprobe", "ef_search", "rerank")
# FAISS's exact search multiplies queries by blocks of this many database rows; its default
# (1024) leaves much of the BLAS throughput unused on a 2-core machine (benchmarks/ann.py).
BLAS_DATABASE_BLOCK = 16384
# Below this many queries FAISS scans without BLAS: memory-bound, and its OpenMP barrier
# costs more than a second thread gains (on a shared machine, many times more).
SMALL_BATCH = 20

__all__ = [
    "FAISS_KINDS",
    "FaissIndex",
    "auto_nlist",
    "configure_faiss",
    "faiss_memory_bytes",
    "faiss_threads",
]


def _faiss() -> Any:
    import faiss

    return faiss


# ---------------------------------------------------------------------- threads
def configure_faiss(*, threads: int | None = None, blas_database_block: int = BLAS_DATABASE_BLOCK) -> None:
    """One explicit, process-wide FAISS setting for the start of a program or notebook.

    ``threads``: OpenMP threads of FAISS (``None``: leave FAISS's default, all cores);
    ``blas_database_block``: database rows per matrix product in exact search of 20+
    queries (FAISS's default is 1024).
    """
    faiss = _faiss()
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    faiss.cvar.distance_compute_blas_database_bs = int(blas_database_block)


@functools.cache
def _openmp() -> ThreadpoolController:
    """threadpoolctl's handle on the OpenMP runtimes loaded once FAISS is (made once: cheap limits)."""
    from threadpoolctl import ThreadpoolController

    _faiss()  # FAISS's own libgomp must be loaded before the controller looks for runtimes
    return ThreadpoolController().select(user_api="openmp")


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` OpenMP threads (FAISS's included); the previous count is
    restored when it ends.  The limit applies to the calling thread."""
    with _openmp().limit(limits=int(n)):
        yield


# ---------------------------------------------------------------------- helpers
def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(1.0, x))))


def auto_nlist(n: int) -> int:
    """Number of IVF cells for ``n`` training vectors: about ``4·sqrt(n)`` (a power of two),
    capped so that every cell gets at least 39 training points (FAISS's k-means advice)."""
    return max(1, min(_pow2_floor(4 * math.sqrt(max(n, 1))), _pow2_floor(n / 39)))


def faiss_memory_bytes(index: Any) -> int:
    """RAM held by a FAISS index, from its data structures (else its serialized size)."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        # id_map (8 B/vector) + the reverse hash map rebuilt in RAM (~ 32 B/entry in libstdc++)
        return 8 * index.ntotal + 32 * index.ntotal + faiss_memory_bytes(index.index)
    if isinstance(index, faiss.IndexIDMap):
        return 8 * index.ntotal + faiss_memory_bytes(index.index)
    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        graph = 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        return int(graph + faiss_memory_bytes(index.storage))
    if isinstance(index, faiss.IndexIVF):
        inv = index.invlists
        lists = sum(inv.list_size(i) for i in range(index.nlist)) * (index.code_size + 8)
        extra = index.pq.centroids.size() * 4 if isinstance(index, faiss.IndexIVFPQ) else 0
        return int(lists + faiss_memory_bytes(index.quantizer) + extra)
    if isinstance(index, faiss.IndexLSH):
        return int(index.ntotal * index.code_size + index.rrot.A.size() * 4 + index.thresholds.size() * 4)
    if isinstance(index, faiss.IndexFlatCodes):
        extra = index.pq.centroids.size() * 4 if isinstance(index, faiss.IndexPQ) else 0
        return int(index.ntotal * index.code_size + extra)
    return int(faiss.serialize_index(index).nbytes)


def _stored_ids(index: Any) -> np.ndarray:
    """The ids a FAISS index holds (an id map, or the inverted lists of an IVF index)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexIDMap):
        return np.asarray(faiss.vector_to_array(index.id_map), dtype=np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise IndexCorruptedError("cannot recover the ids of this FAISS index")
    inv, parts = ivf.invlists, []
    for lst in range(ivf.nlist):
        size = inv.list_size(lst)
        if size:
            ptr = inv.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64).copy())
            inv.release_ids(lst, ptr)
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


# ---------------------------------------------------------------------- the backend
@dataclass(frozen=True)
class _Prepared:
    """What a search reads: the id map or index (kept alive), the index searched, its raw
    ``search_c``, the id table (``None`` when FAISS stores the ids), whether it scans every
    code, and whether the lean path applies (no re-ranking, no score conversion)."""

    owner: Any
    index: Any
    search_c: Any
    table: np.ndarray | None
    scan: bool
    lean: bool


class FaissIndex(BaseIndex):
    """A FAISS index behind the ``VectorIndex`` interface (see the module doc for kinds)."""

    def __init__(
        self, dim: int, kind: str = "flat", metric: str = "ip", *, fingerprint: str | None = None, **params: Any
    ):
        kind = str(kind)
        if kind in KIND_DEFAULTS:
            params = check_params(kind, params, KIND_DEFAULTS[kind])
        elif params:
            raise ValueError(f"a FAISS factory string takes no extra parameters, got {sorted(params)}")
        if kind == "lsh" and metric != "ip":
            raise ValueError("lsh hashes angles: it supports metric='ip' (on L2-normalised vectors) only")
        super().__init__(dim, metric, fingerprint=fingerprint, keep_vectors=int(params.get("rerank") or 0) > 0)
        self.kind = kind  # one class serves every FAISS kind
        self.params: dict[str, Any] = dict(params)
        self._prepared: _Prepared | None = None  # what a search needs, rebuilt after every change
        self._index: Any = None  # None only for an IVF kind whose nlist waits for the training set
        if not (kind in ("ivf", "ivfpq") and self.params["nlist"] is None):
            self._index = self._make_faiss(self.params.get("nlist"))

    @property
    def faiss_index(self) -> Any:
        """The FAISS object underneath (``None`` before an auto-``nlist`` IVF is trained)."""
        return self._index

    # ------------------------------------------------------------------ construction
    def _make_faiss(self, nlist: int | None) -> Any:
        faiss = _faiss()
        d, p = self.dim, self.params
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        if self.kind in ("ivf", "ivfpq"):
            assert nlist is not None
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
            return ivf  # IVF indexes store ids in their inverted lists
        if self.kind == "flat":
            base = faiss.IndexFlat(d, metric)
        elif self.kind == "hnsw":
            base = faiss.IndexHNSWFlat(d, int(p["M"]), metric)
            base.hnsw.efConstruction = int(p["ef_construction"])
            base.hnsw.efSearch = int(p["ef_search"])
        elif self.kind == "lsh":
            base = faiss.IndexLSH(d, int(p["nbits"]), True, False)
        else:
            try:
                base = faiss.index_factory(d, self.kind, metric)
            except RuntimeError as e:
                raise ValueError(
                    f"kind must be one of {(*FAISS_KINDS, 'tree', 'annoy', 'scann', 'milvus')} or a FAISS "
                    "index_factory string; "
                    f"FAISS could not parse {self.kind!r}: {str(e).splitlines()[0]}"
                ) from None
            if isinstance(base, faiss.IndexIDMap) or faiss.try_extract_index_ivf(base) is not None:
                return base
        wrapped = faiss.IndexIDMap2(base)
        wrapped.own_fields = True
        base.this.disown()
        return wrapped

    # ------------------------------------------------------------------ training
    @property
    def is_trained(self) -> bool:
        return self._index is not None and bool(self._index.is_trained)

    def min_training_vectors(self) -> int:
        """The fewest vectors ``train`` accepts for this kind (0 if no training is needed)."""
        return self._training_need(self.params.get("nlist"))

    def _training_need(self, nlist: int | None) -> int:
        if self.kind in ("ivf", "ivfpq"):
            need = int(nlist or 1)
            return max(need, 2 ** int(self.params["nbits"])) if self.kind == "ivfpq" else need
        if self._index is not None and not self._index.is_trained:
            ivf = _faiss().try_extract_index_ivf(self._index)
            return int(ivf.nlist) if ivf is not None else 1
        return 0

    def train(self, embeddings: np.ndarray) -> Self:
        """Train (k-means cells, PQ codebooks) on a sample ``(n, dim)``; no-op when not needed."""
        x = check_vectors(embeddings, self.dim, "training embeddings")
        t0 = time.perf_counter()
        self._train(x)
        self.build_seconds += time.perf_counter() - t0
        return self

    def _train(self, x: np.ndarray) -> None:
        if self.is_trained:
            return
        auto = self.kind in ("ivf", "ivfpq") and self.params.get("nlist") is None
        nlist = auto_nlist(len(x)) if auto else self.params.get("nlist")
        need = self._training_need(nlist)
        if len(x) < need:
            raise ValueError(
                f"{self.kind} index (nlist={nlist}) needs at least {need} training vectors, got {len(x)}; "
                "add more vectors in the first add(), call train() with a larger sample, or choose a smaller nlist"
            )
        if self._index is None:  # auto nlist, now that the training set size is known
            self._index = self._make_faiss(nlist)
        limit = self.params.get("train_size")
        if limit and len(x) > limit:
            x = x[np.sort(np.random.default_rng(0).choice(len(x), int(limit), replace=False))]
        # PQ training runs hundreds of tiny k-means problems whose OpenMP regions cost more
        # than they save: on a shared machine two threads trained ~7x slower than one
        pq = self.kind == "ivfpq" or "PQ" in self.kind
        try:
            with faiss_threads(1) if pq else contextlib.nullcontext():
                self._index.train(x)
        except RuntimeError as e:
            raise ValueError(
                f"training the {self.kind} index on {len(x)} vectors failed: {str(e).splitlines()[0]}"
            ) from None

    # ------------------------------------------------------------------ add / remove
    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        self._train(x)  # the first add trains (timed by add, not twice)
        self._index.add_with_ids(x, ids)
        self._prepared = None

    def _remove(self, ids: np.ndarray) -> None:
        faiss = _faiss()
        try:
            removed = self._index.remove_ids(faiss.IDSelectorBatch(ids))
        except RuntimeError:  # e.g. HNSW: no deletion in place -> rebuild from stored vectors
            removed = self._rebuild_without(ids)
        if removed != len(ids):
            raise RuntimeError(f"FAISS removed {removed} of {len(ids)} ids; index left inconsistent")
        self._prepared = None

    def _rebuild_without(self, ids: np.ndarray) -> int:
        faiss = _faiss()
        idmap = self._index
        all_ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)
        vecs = faiss.downcast_index(idmap.index).reconstruct_n(0, idmap.ntotal)
        keep = ~np.isin(all_ids, ids)
        fresh = faiss.clone_index(idmap)
        fresh.reset()
        if keep.any():
            fresh.add_with_ids(np.ascontiguousarray(vecs[keep]), all_ids[keep])
        self._index = fresh
        return int((~keep).sum())

    # ------------------------------------------------------------------ search
    def set_search_params(self, **params: Any) -> Self:
        """Change query-time knobs without rebuilding: IVF ``nprobe``, HNSW ``ef_search``,
        and the re-ranking factor ``rerank`` (only for indexes built with ``rerank > 0``)."""
        faiss = _faiss()
        unknown = set(params) - set(SEARCH_PARAMS)
        if unknown:
            raise ValueError(f"unknown search parameter(s) {sorted(unknown)}; expected some of {list(SEARCH_PARAMS)}")
        if params.get("nprobe") is not None:
            if self._index is None or faiss.try_extract_index_ivf(self._index) is None:
                raise ValueError(f"nprobe applies to IVF indexes, not {self.kind!r}")
            faiss.extract_index_ivf(self._index).nprobe = int(params["nprobe"])
            if "nprobe" in self.params:
                self.params["nprobe"] = int(params["nprobe"])
        if params.get("ef_search") is not None:
            if self.kind != "hnsw":
                raise ValueError(f"ef_search applies to hnsw indexes, not {self.kind!r}")
            faiss.downcast_index(self._index.index).hnsw.efSearch = int(params["ef_search"])
            self.params["ef_search"] = int(params["ef_search"])
        if params.get("rerank") is not None:
            if self._vectors is None:
                raise ValueError("rerank can be changed only on an index built with rerank > 0")
            if int(params["rerank"]) < 1:
                raise ValueError("rerank must be >= 1 on an index that keeps its vectors")
            self.params["rerank"] = int(params["rerank"])
        return self

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._vectors is not None:  # candidates from the compressed index, exact re-ranking
            _, cand = self._search_faiss(q, min(len(self), k * int(self.params["rerank"])))
            return self._rerank(q, cand, k)
        D, I = self._search_faiss(q, k)
        if self.kind == "lsh":
            D = np.cos(np.pi * D / float(self.params["nbits"])).astype(np.float32)
        return D, I

    def _prepare(self) -> _Prepared:
        """The index to search and its id table, cached until the next change."""
        faiss = _faiss()
        index, table = self._index, None
        if isinstance(index, faiss.IndexIDMap):
            # search the wrapped index and translate labels in NumPy: IndexIDMap's own search
            # translates them in an OpenMP loop whose thread wake-up dominates single queries;
            # a trailing -1 makes FAISS's "no result" label (-1) translate to -1 in one take
            table = np.append(faiss.vector_to_array(index.id_map).astype(np.int64), -1)
            index = faiss.downcast_index(index.index)
        # graph and IVF searches of one query open no parallel region: only scans are limited
        lean = self._vectors is None and self.kind != "lsh"  # no re-ranking, no score conversion
        self._prepared = _Prepared(
            self._index, index, index.search_c, table, isinstance(index, faiss.IndexFlatCodes), lean
        )
        return self._prepared

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        p = self._prepared or self._prepare()
        with faiss_threads(1) if p.scan and len(q) < SMALL_BATCH else contextlib.nullcontext():
            D, I = p.index.search(q, k)
        return D, (p.table.take(I) if p.table is not None else I)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors: ``(scores (n, k) float32, ids (n, k) int64)``, best
        first, padded with id ``-1`` (see :meth:`BaseIndex.search`).

        Kinds without re-ranking or score conversion take the lean path of the module doc;
        it returns exactly what FAISS's own search of the index returns."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        k = check_k(k)
        n = q.shape[0] if q.ndim == 2 else 0
        p = self._prepared or (self._prepare() if self._index is not None else None)
        if p is None or not p.lean or q.ndim != 2 or q.shape[1] != self.dim or not q.flags.c_contiguous:
            return super().search(queries, k)  # the general path: its checks, messages and padding
        if n == 0 or k > len(self._ids):
            return super().search(queries, k)
        if n > 1 and not np.isfinite(q).all():
            raise ValueError("queries contain NaN or infinite values")
        faiss = _faiss()
        D = np.empty((n, k), np.float32)
        I = np.empty((n, k), np.int64)
        with faiss_threads(1) if p.scan and n < SMALL_BATCH else contextlib.nullcontext():
            p.search_c(n, faiss.swig_ptr(q), k, faiss.swig_ptr(D), faiss.swig_ptr(I), None)
        # a NaN or infinite coordinate makes every distance non-finite: a finite best distance
        # proves one query finite, only a non-finite one pays for the full test
        if n == 1 and not (I[0, 0] >= 0 and math.isfinite(D[0, 0])) and not np.isfinite(q).all():
            raise ValueError("queries contain NaN or infinite values")
        if p.table is not None:
            I = p.table.take(I)
        if (I[0, k - 1] < 0) if n == 1 else bool((I[:, k - 1] < 0).any()):  # best first: gaps at the end
            D[I < 0] = pad_value(self.metric)
        return D, I

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._vectors is not None
        valid = cand >= 0
        rows = np.searchsorted(self._ids, np.where(valid, cand, self._ids[0]))
        vecs = self._vectors[rows.ravel()].reshape(*rows.shape, self.dim)
        if self.metric == "ip":
            s = np.einsum("nd,ncd->nc", q, vecs)
            s[~valid] = -np.inf
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        else:
            s = ((vecs - q[:, None, :]) ** 2).sum(-1)
            s[~valid] = np.inf
            order = np.argsort(s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, order, 1).astype(np.float32), np.take_along_axis(
            np.where(valid, cand, -1), order, 1
        )

    # ------------------------------------------------------------------ stored vectors, memory
    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Flat and HNSW graphs hold the float vectors themselves; the other kinds only codes."""
        faiss = _faiss()
        if isinstance(self._index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(self._index.index)
            if isinstance(inner, faiss.IndexFlat | faiss.IndexHNSWFlat):
                return np.asarray(self._index.reconstruct_batch(np.ascontiguousarray(ids)), dtype=np.float32)
        return super()._reconstruct(ids)

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM: vectors or codes, ids, graph links, centroids, and
        the float vectors kept for re-ranking (not counted when memory-mapped from disk)."""
        held = faiss_memory_bytes(self._index) if self._index is not None else self._ids.nbytes
        return int(held + self._kept_vectors_bytes())

    # ------------------------------------------------------------------ persistence
    def _versions(self) -> dict[str, str]:
        return {"faiss": _faiss().__version__}

    def _write_files(self, folder: Path) -> dict[str, dict[str, str]]:
        faiss = _faiss()
        files: dict[str, dict[str, str]] = {}
        if self._index is not None:
            files["index"] = write_checksummed(
                folder, "index", ".faiss", lambda tmp: faiss.write_index(self._index, str(tmp))
            )
        if self._vectors is not None or self._index is None:
            self._write_kept(folder, files)
        return files

    @classmethod
    def from_manifest(cls, path: Path, manifest: Manifest, options: OpenOptions) -> Self:
        """The saved index described by an already checked ``manifest`` (checksums verified here)."""
        faiss = _faiss()
        blobs = manifest.verified_files(path)
        self = cls(manifest.dim, manifest.kind, manifest.metric, fingerprint=manifest.fingerprint, **manifest.params)
        self._index = None  # replaced by the saved one
        try:
            if "index" in blobs:
                self._index = faiss.read_index(str(blobs["index"]))
                if self._index.d != self.dim:
                    raise IndexCorruptedError(
                        f"{blobs['index']} holds dimension {self._index.d}, manifest says {self.dim}"
                    )
        except RuntimeError as e:  # FAISS could not parse the file
            raise IndexCorruptedError(f"cannot read the index at {path}: {str(e).splitlines()[0]}") from None
        ids = load_npy(blobs["ids"]) if "ids" in blobs else np.sort(_stored_ids(self._index))
        self._ids = np.asarray(ids, dtype=np.int64)
        if "vectors" in blobs:
            self._vectors = load_npy(blobs["vectors"], mmap=options.mmap_vectors)
        self._check_count(path, manifest)
        if self._index is not None and self._index.ntotal != manifest.count:
            raise IndexCorruptedError(
                f"index at {path} holds {self._index.ntotal} vectors, manifest says {manifest.count}"
            )
        return self
