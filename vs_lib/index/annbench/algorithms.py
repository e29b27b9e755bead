"""The algorithms of the sweep, each driven through its own library the way ann-benchmarks does.

An :class:`Algorithm` builds one index (``fit``), saves and reloads it (the build cache),
takes a query setting (``set_query``) and answers one query per call (``query``: the call
that is timed) or many (``batch``: the recall pass, on one thread).  Names follow
ann-benchmarks (``hnswlib``, ``faiss-ivf``, ``hnsw(faiss)`` is ``faiss-hnsw`` here, ...);
vs_lib's own kinds are ``vs_lib-<kind>``, made through :func:`vs_lib.index.create`.

Where a vs_lib kind wraps a library that ann-benchmarks also runs (FAISS flat / IVF / HNSW,
Annoy, ScaNN), the raw library entry searches *the very index the vs_lib kind built* — the
same library call with the same build parameters — through the library's own query call
(:meth:`VsLibKind.views`).  That saves a build, and the pair measures what vs_lib's
interface costs per query.  Gallery rows are added with ids ``0..n-1``, so every algorithm
returns gallery rows.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import pickle
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ... import config

__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm", "version_of"]


def version_of(distribution: str) -> str:
    """The installed version of ``distribution`` (``"absent"`` when it is not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


class Algorithm(ABC):
    """One index of one library; ``build`` holds its build parameters (JSON-able)."""

    name: str = "?"  # ann-benchmarks' name
    library: str = "?"  # the distribution whose version keys the build cache
    cacheable: bool = True

    def __init__(self, build: dict[str, Any], *, build_threads: int = 1):
        self.build = dict(build)
        self.build_threads = int(build_threads)
        self.setting: Any = None

    def versions(self) -> dict[str, str]:
        from ... import __version__

        return {self.library: version_of(self.library), "vs_lib": __version__}

    @abstractmethod
    def fit(self, x: np.ndarray) -> None:
        """Build on the gallery ``x`` ``(n, d)`` float32 (rows become ids ``0..n-1``)."""

    def save(self, folder: Path) -> None:
        raise NotImplementedError(f"{self.name} builds are not cached")

    def load(self, folder: Path, x: np.ndarray) -> None:
        raise NotImplementedError(f"{self.name} builds are not cached")

    def set_query(self, setting: Any) -> None:
        """Apply one query setting (``ef``, ``nprobe``, ``search_k``, ...)."""
        self.setting = setting

    @abstractmethod
    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        """The ids of the ``k`` nearest gallery rows of one query ``v`` ``(d,)``: the timed call."""

    def batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``(q, k)`` int64 ids of many queries (``-1`` padded); by default one call each."""
        out = np.full((len(queries), k), -1, np.int64)
        for i, v in enumerate(queries):
            r = np.asarray(self.query(v, k))[:k]
            out[i, : len(r)] = r
        return out

    def memory_bytes(self) -> int | None:
        """The library's own count of the index's bytes, where it offers one."""
        return None

    def views(self) -> list[Algorithm]:
        """Other algorithms that search this very index (raw library calls)."""
        return []


# ---------------------------------------------------------------------- brute force
class NumpyBruteForce(Algorithm):
    """ann-benchmarks' ``bruteforce-blas``: ``|x|² - 2·X·v`` by BLAS, then ``argpartition``."""

    name = "bruteforce-numpy"
    library = "numpy"
    cacheable = False

    def fit(self, x: np.ndarray) -> None:
        self.x = np.ascontiguousarray(x, np.float32)
        self.lengths = np.einsum("nd,nd->n", self.x, self.x)

    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        d = self.lengths - 2 * (self.x @ v)
        top = np.argpartition(d, k)[:k]
        return top[np.argsort(d[top])]

    def batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        out = np.empty((len(queries), k), np.int64)
        for s in range(0, len(queries), 256):
            d = self.lengths[None, :] - 2 * (queries[s : s + 256] @ self.x.T)
            top = np.argpartition(d, k, axis=1)[:, :k]
            out[s : s + 256] = np.take_along_axis(top, np.argsort(np.take_along_axis(d, top, 1), 1), 1)
        return out

    def memory_bytes(self) -> int:
        return int(self.x.nbytes + self.lengths.nbytes)


# ---------------------------------------------------------------------- vs_lib kinds and their raw views
class VsLibKind(Algorithm):
    """A vs_lib kind through :func:`vs_lib.index.create` (``build["kind"]`` + its parameters),
    ``metric="l2"``; query settings are ``set_search_params`` keyword dicts."""

    name = "vs_lib"
    library = "faiss-cpu"
    RAW: ClassVar[dict[str, str]] = {
        "flat": "bruteforce-faiss",
        "ivf": "faiss-ivf",
        "hnsw": "faiss-hnsw",
        "annoy": "annoy",
        "scann": "scann",
    }

    def __init__(self, build: dict[str, Any], *, build_threads: int = 1):
        super().__init__(build, build_threads=build_threads)
        self.kind = str(build["kind"])
        self.name = f"vs_lib-{self.kind}"
        self.cacheable = self.kind != "milvus"  # a Milvus collection lives in its own store
        self.index: Any = None
        self._milvus_dir: tempfile.TemporaryDirectory[str] | None = None

    def versions(self) -> dict[str, str]:
        out = super().versions()
        extra = {"annoy": "annoy", "scann": "scann", "tree": "scikit-learn", "milvus": "pymilvus"}.get(self.kind)
        if extra:
            out[extra] = version_of(extra)
        return out

    def _params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.build.items() if k != "kind"}
        if self.kind == "annoy":
            params["build_threads"] = self.build_threads
        if self.kind == "scann":
            params["training_threads"] = self.build_threads
        if self.kind == "milvus":
            self._milvus_dir = tempfile.TemporaryDirectory(prefix="vs-annbench-milvus-")
            params["uri"] = str(Path(self._milvus_dir.name) / "bench.db")
        return params

    def fit(self, x: np.ndarray) -> None:
        from .. import create
        from ..faiss_index import faiss_threads

        self.index = create(x.shape[1], self.kind, metric="l2", **self._params())
        with faiss_threads(self.build_threads):
            self.index.add(x, np.arange(len(x), dtype=np.int64))
            if self.kind == "annoy":
                self.index.build()
            elif self.kind == "tree":
                self.index.search(x[:1], 1)  # the tree is built on the first search

    def save(self, folder: Path) -> None:
        self.index.save(folder / "index")

    def load(self, folder: Path, x: np.ndarray) -> None:
        from .. import load

        self.index = load(folder / "index", expected_dim=x.shape[1])

    def set_query(self, setting: Any) -> None:
        self.setting = setting
        if setting:
            self.index.set_search_params(**setting)

    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(v, k)[1][0]

    def batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        if self.kind in ("annoy", "tree"):  # per-query loops inside: one call is fine
            return np.asarray(self.index.search(queries, k)[1])
        return np.concatenate([self.index.search(queries[s : s + 1024], k)[1] for s in range(0, len(queries), 1024)])

    def memory_bytes(self) -> int:
        return int(self.index.memory_bytes())

    def views(self) -> list[Algorithm]:
        raw = self.RAW.get(self.kind)
        return [RawView(raw, self)] if raw else []


class RawView(Algorithm):
    """A library's own query call on the index a :class:`VsLibKind` built (see the module doc)."""

    cacheable = False

    def __init__(self, name: str, parent: VsLibKind):
        super().__init__(parent.build, build_threads=parent.build_threads)
        self.name = name
        self.parent = parent
        self.library = {"annoy": "annoy", "scann": "scann"}.get(name, "faiss-cpu")
        self._raw: tuple[Any, Any] | None = None  # (parent's index, the raw object searched)

    def fit(self, x: np.ndarray) -> None:
        raise NotImplementedError("a raw view searches its parent's index")

    def set_query(self, setting: Any) -> None:
        self.setting = setting
        self.parent.set_query(setting)  # the same knob, set on the same object

    def _raw_object(self) -> Any:
        index = self.parent.index
        if self._raw is None or self._raw[0] is not index:
            import faiss

            if self.name in ("annoy", "scann"):
                rows = index.row_ids
                if not np.array_equal(rows, np.arange(len(rows))):
                    raise RuntimeError(f"{self.name}: forest rows are not the gallery rows; raw results would be wrong")
            raw = {
                "bruteforce-faiss": lambda: faiss.downcast_index(index.faiss_index.index),  # inside the id map
                "faiss-hnsw": lambda: faiss.downcast_index(index.faiss_index.index),
                "faiss-ivf": lambda: index.faiss_index,
                "annoy": lambda: index.forest,
                "scann": lambda: index.searcher,
            }[self.name]()
            self._raw = (index, raw)
        return self._raw[1]

    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        raw, p = self._raw_object(), self.parent.index.params
        if self.name == "annoy":
            return np.asarray(raw.get_nns_by_vector(v, k, int(p["search_k"])))
        if self.name == "scann":
            return raw.search(v, k, max(int(p["reorder"]), k), int(p["leaves_to_search"]))[0]
        return raw.search(v.reshape(1, -1), k)[1][0]


# ---------------------------------------------------------------------- peer libraries
class Hnswlib(Algorithm):
    """ann-benchmarks' ``hnswlib``: ``init_index(max_elements=n, ef_construction, M)``, ``set_ef``."""

    name = "hnswlib"
    library = "hnswlib"

    def _new(self, d: int) -> Any:
        import hnswlib

        return hnswlib.Index(space="l2", dim=d)

    def fit(self, x: np.ndarray) -> None:
        self.p = self._new(x.shape[1])
        self.p.init_index(
            max_elements=len(x), ef_construction=int(self.build["ef_construction"]), M=int(self.build["M"])
        )
        self.p.set_num_threads(self.build_threads)
        self.p.add_items(x, np.arange(len(x)))
        self.p.set_num_threads(1)

    def save(self, folder: Path) -> None:
        self.p.save_index(str(folder / "index.bin"))

    def load(self, folder: Path, x: np.ndarray) -> None:
        self.p = self._new(x.shape[1])
        self.p.load_index(str(folder / "index.bin"), max_elements=len(x))
        self.p.set_num_threads(1)

    def set_query(self, setting: Any) -> None:
        self.setting = setting
        self.p.set_ef(int(setting))

    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        return self.p.knn_query(v.reshape(1, -1), k=k)[0][0]

    def batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(self.p.knn_query(queries, k=k, num_threads=1)[0], np.int64)


class USearch(Algorithm):
    """usearch (as in its unmerged ann-benchmarks entry): ``connectivity=M``, ``expansion_add``,
    ``expansion_search = ef``, float32 vectors, squared L2."""

    name = "usearch"
    library = "usearch"

    def _new(self, d: int) -> Any:
        from usearch.index import Index

        return Index(
            ndim=d,
            metric="l2sq",
            dtype="f32",
            connectivity=int(self.build["M"]),
            expansion_add=int(self.build["ef_construction"]),
        )

    def fit(self, x: np.ndarray) -> None:
        self.index = self._new(x.shape[1])
        self.index.add(np.arange(len(x), dtype=np.uint64), x, threads=self.build_threads)

    def save(self, folder: Path) -> None:
        self.index.save(str(folder / "index.usearch"))

    def load(self, folder: Path, x: np.ndarray) -> None:
        self.index = self._new(x.shape[1])
        self.index.load(str(folder / "index.usearch"))

    def set_query(self, setting: Any) -> None:
        self.setting = setting
        self.index.expansion_search = int(setting)

    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(v, k, threads=1).keys

    def batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(self.index.search(queries, k, threads=1).keys, np.int64)

    def memory_bytes(self) -> int:
        return int(self.index.memory_usage)


class PyNNDescent(Algorithm):
    """ann-benchmarks' ``pynndescent``: ``NNDescent(low_memory=True, n_search_trees=1,
    compressed=True, ...)``, ``prepare()``; query setting ``epsilon``.  Cached as a pickle
    (pynndescent has no other format), whose sha256 is checked before it is read."""

    name = "pynndescent"
    library = "pynndescent"

    def fit(self, x: np.ndarray) -> None:
        import numba
        import pynndescent

        threads = numba.get_num_threads()
        try:
            b = self.build
            self.index = pynndescent.NNDescent(
                x,
                n_neighbors=int(b["n_neighbors"]),
                metric="euclidean",
                low_memory=True,
                leaf_size=int(b["leaf_size"]),
                pruning_degree_multiplier=float(b["pruning_degree_multiplier"]),
                diversify_prob=float(b["diversify_prob"]),
                n_search_trees=1,
                compressed=True,
                n_jobs=self.build_threads,
                random_state=1,
                verbose=False,
            )
            self.index.prepare()
        finally:
            numba.set_num_threads(threads)

    def save(self, folder: Path) -> None:
        with open(folder / "index.pkl", "wb") as f:
            pickle.dump(self.index, f, protocol=pickle.HIGHEST_PROTOCOL)
        (folder / "index.pkl.sha256").write_text(config.sha256_file(folder / "index.pkl"))

    def load(self, folder: Path, x: np.ndarray) -> None:
        f = folder / "index.pkl"
        if config.sha256_file(f) != (folder / "index.pkl.sha256").read_text().strip():
            raise OSError(f"{f} fails its checksum")
        with open(f, "rb") as fh:
            self.index = pickle.load(fh)  # our own cache file, checksum verified
        self.index.prepare()

    def query(self, v: np.ndarray, k: int) -> np.ndarray:
        return self.index.query(v.reshape(1, -1), k=k, epsilon=float(self.setting))[0][0]

    def batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(self.index.query(queries, k=k, epsilon=float(self.setting))[0], np.int64)


ALGORITHMS: dict[str, type[Algorithm]] = {
    "bruteforce-numpy": NumpyBruteForce,
    "vs_lib": VsLibKind,
    "hnswlib": Hnswlib,
    "usearch": USearch,
    "pynndescent": PyNNDescent,
}


def make_algorithm(name: str, build: dict[str, Any], *, build_threads: int = 1) -> Algorithm:
    """The adapter for ``name`` (a key of :data:`ALGORITHMS`) with build parameters ``build``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name](build, build_threads=build_threads)


def build_key(algorithm: Algorithm, task_signature: str) -> str:
    """The cache folder name of a build: readable parameters + a hash of everything it depends on."""
    params = "-".join(f"{k}{v}" for k, v in sorted(algorithm.build.items()))
    doc = repr((algorithm.name, sorted(algorithm.build.items()), sorted(algorithm.versions().items()), task_signature))
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{algorithm.name}-{params}")[:80]
    return f"{safe}-{hashlib.sha256(doc.encode()).hexdigest()[:12]}"
