"""What an index costs as it grows: with N (:func:`measure_growth`), and per encoding
(:func:`measure_bytes_per_vector`); :func:`fit_loglog` fits the growth exponent.

``measure_growth`` grows one compressed FAISS index (default ``IVF1024,PQ16``) chunk by chunk
over **synthetic** clustered vectors (:func:`vs_lib.index.synthetic_stream`) to 10M+,
recording build time, memory, single-core QPS and recall@10 at checkpoints, against an
exact top-k kept alongside (:func:`vs_lib.index.exact_topk` on each chunk, merged).
:func:`measure_thread_scaling` measures how the QPS of such an index grows with search
threads: a PQ scan streams codes from memory, so extra cores add less than they promise.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..index import exact_topk, faiss_memory_bytes, faiss_threads, neighbour_recall, synthetic_queries, synthetic_stream
from .binary import binarize

__all__ = [
    "ENCODINGS",
    "EncodingCost",
    "GrowthPoint",
    "LogLogFit",
    "ThreadScaling",
    "fit_loglog",
    "measure_bytes_per_vector",
    "measure_growth",
    "measure_thread_scaling",
]

ENCODINGS: dict[str, str | None] = {  # name -> FAISS factory (inner product); None: sign bits (IndexBinaryFlat)
    "float32": "Flat",
    "float16": "SQfp16",
    "SQ8": "SQ8",
    "PQ8": "PQ8",
    "PQ16": "PQ16",
    "PQ32": "PQ32",
    "PQ64": "PQ64",
    "binary": None,
}


@dataclass(frozen=True)
class GrowthPoint:
    """The grown index at ``N`` vectors (SYNTHETIC): cumulative build time, RAM, speed, recall.

    ``bytes``: RAM of codes, ids, centroids and codebooks; ``qps``: queries per second with
    ``threads`` search threads; ``recall``: recall@k against exact search;
    ``recall_in_top10k``: share of the true top-k among the index's top ``10·k`` (what a
    re-ranking stage with the full vectors would recover).
    """

    N: int
    factory: str
    build_seconds: float
    add_seconds: float
    train_seconds: float
    bytes: int
    bytes_per_vector: float
    qps: float
    recall: float
    recall_in_top10k: float
    nprobe: int
    threads: int
    build_threads: int | None
    synthetic: bool = True


@dataclass(frozen=True)
class LogLogFit:
    """``y ≈ a · N^slope`` fitted on log-log axes, with its ``r2``."""

    slope: float
    a: float
    r2: float


@dataclass(frozen=True)
class EncodingCost:
    """One encoding measured on real vectors: per-vector and fixed bytes, recall@10, build time."""

    bytes_per_vector: float
    fixed_bytes: float
    recall: float
    build_seconds: float


def _no_polysemous(index: Any) -> Any:
    """Switch off FAISS's polysemous training of 8-bit PQ codes (a slow code-permutation
    optimisation, only useful for Hamming pre-filtering, which we do not use)."""
    import faiss

    for candidate in (faiss.downcast_index(index), faiss.try_extract_index_ivf(index)):
        if candidate is not None and hasattr(candidate, "do_polysemous_training"):
            candidate.do_polysemous_training = False
    return index


class _RunningTopK:
    """The exact top-k of fixed queries over a database seen chunk by chunk (row numbers)."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.rows = np.zeros((len(queries), 0), np.int64)

    def update(self, part: np.ndarray, offset: int) -> None:
        s, r = exact_topk(self.queries, part, min(self.k, len(part)))
        scores, rows = np.concatenate([self.scores, s], 1), np.concatenate([self.rows, r + offset], 1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self.scores, self.rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _trained_index(factory: str, dim: int, train: np.ndarray, nprobe: int) -> tuple[Any, float]:
    import faiss

    index = _no_polysemous(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
    t0 = time.perf_counter()
    index.train(train)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    return index, time.perf_counter() - t0


def measure_growth(
    sizes: Sequence[int],
    dim: int = 128,
    factory: str = "IVF1024,PQ16",
    *,
    nprobe: int = 16,
    train_size: int = 100_000,
    n_queries: int = 200,
    k: int = 10,
    chunk: int = 250_000,
    seed: int = 0,
    threads: int = 1,
    build_threads: int | None = None,
    n_clusters: int = 1000,
    spread: float = 0.6,
    intrinsic_dim: int | None = 16,
    noise: float = 0.1,
    progress: bool = True,
) -> list[GrowthPoint]:
    """Grow one compressed FAISS index (``factory``, inner product) and measure it at each N in ``sizes``.

    Trained once on a ``train_size`` sample of the same synthetic model (``n_clusters``,
    ``spread``, ``intrinsic_dim``, ``noise``; see :mod:`vs_lib.index.synthetic`), then grown
    chunk by chunk with ``build_threads`` FAISS threads (default: FAISS's own); searches run
    with ``threads`` (default 1: per core).  Memory stays at one chunk plus the index.
    """
    sizes = sorted(int(s) for s in sizes)
    if not sizes or sizes[0] < 1:
        raise ValueError("sizes must be positive")
    model: dict[str, Any] = {"n_clusters": n_clusters, "spread": spread, "intrinsic_dim": intrinsic_dim, "noise": noise}
    q = synthetic_queries(n_queries, dim, seed=seed, **model)
    truth = _RunningTopK(q, k)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sizes[-1], desc=f"growing {factory} (synthetic)", unit="vec", unit_scale=True)
    points: list[GrowthPoint] = []
    with faiss_threads(build_threads) if build_threads else contextlib.nullcontext():
        train = next(synthetic_stream(train_size, dim, seed=seed + 1, chunk=train_size, **model))
        index, train_s = _trained_index(factory, dim, train, nprobe)
        del train
        n, add_s = 0, 0.0
        checkpoints = iter(sizes)
        next_size = next(checkpoints)
        for x in synthetic_stream(sizes[-1], dim, seed=seed, chunk=chunk, **model):
            pos = 0
            while pos < len(x):  # add up to the next checkpoint, measure there
                part = x[pos : pos + min(len(x) - pos, next_size - n)]
                t0 = time.perf_counter()
                index.add(part)
                add_s += time.perf_counter() - t0
                truth.update(part, n)
                n, pos = n + len(part), pos + len(part)
                if bar is not None:
                    bar.update(len(part))
                if n == next_size:
                    point = _measure_point(index, q, truth.rows, k, threads)
                    points.append(
                        GrowthPoint(
                            N=n,
                            factory=factory,
                            build_seconds=train_s + add_s,
                            add_seconds=add_s,
                            train_seconds=train_s,
                            nprobe=nprobe,
                            threads=threads,
                            build_threads=build_threads,
                            **point,
                        )
                    )
                    next_size = next(checkpoints, sizes[-1])
    if bar is not None:
        bar.close()
    return points


def _measure_point(index: Any, q: np.ndarray, truth: np.ndarray, k: int, threads: int) -> dict[str, Any]:
    """RAM, single-core speed, recall and candidate recall of the index as it is now."""
    with faiss_threads(threads):
        t0 = time.perf_counter()
        _, found = index.search(q, k)
        search_s = time.perf_counter() - t0
    _, cand = index.search(q, min(index.ntotal, 10 * k))  # the candidates a re-ranking stage would get
    nbytes = faiss_memory_bytes(index)
    return {
        "bytes": nbytes,
        "bytes_per_vector": nbytes / index.ntotal,
        "qps": len(q) / max(search_s, 1e-9),
        "recall": neighbour_recall(found, truth, k),
        "recall_in_top10k": float(np.mean([np.isin(t, c).mean() for t, c in zip(truth, cand, strict=True)])),
    }


@dataclass(frozen=True)
class ThreadScaling:
    """Search speed of one index (SYNTHETIC vectors) with ``threads`` FAISS threads.

    ``qps``: the best of the repeats (the least disturbed by other work on the machine);
    ``speedup``: ``qps`` over the one-thread ``qps``; ``efficiency``: ``speedup / threads``
    (1 = every thread adds a full core's worth).
    """

    factory: str
    N: int
    threads: int
    qps: float
    speedup: float
    efficiency: float


def measure_thread_scaling(
    n: int,
    dim: int = 128,
    factory: str = "IVF1024,PQ16",
    *,
    threads: Sequence[int] = (1, 2),
    nprobe: int = 16,
    train_size: int = 20_000,
    n_queries: int = 2000,
    k: int = 10,
    repeats: int = 3,
    seed: int = 0,
    chunk: int = 250_000,
) -> list[ThreadScaling]:
    """Build ``factory`` over ``n`` synthetic clustered vectors and time one batch of
    ``n_queries`` searches with each thread count (FAISS splits a batch across its threads).

    The first count in ``threads`` is the reference of ``speedup``; pass 1 first.
    """
    if not threads or min(threads) < 1:
        raise ValueError(f"threads must be positive counts, got {threads}")
    model: dict[str, Any] = {"n_clusters": 1000, "spread": 0.6, "intrinsic_dim": 16, "noise": 0.1}
    train = next(synthetic_stream(train_size, dim, seed=seed + 1, chunk=train_size, **model))
    index, _ = _trained_index(factory, dim, train, nprobe)
    for x in synthetic_stream(n, dim, seed=seed, chunk=chunk, **model):
        index.add(x)
    q = synthetic_queries(n_queries, dim, seed=seed, **model)
    qps: list[float] = []
    for t in threads:
        with faiss_threads(int(t)):
            index.search(q[:100], k)  # warm caches
            best = np.inf
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                index.search(q, k)
                best = min(best, time.perf_counter() - t0)
        qps.append(n_queries / max(best, 1e-9))
    return [
        ThreadScaling(factory, int(index.ntotal), int(t), v, v / qps[0], v / qps[0] / int(t))
        for t, v in zip(threads, qps, strict=True)
    ]


def fit_loglog(n: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LogLogFit:
    """Least-squares fit ``y ≈ a · N^b`` on log-log axes."""
    ln, ly = np.log(np.asarray(n, float)), np.log(np.asarray(y, float))
    if len(ln) < 2:
        raise ValueError("need at least two points to fit a growth exponent")
    b, loga = np.polyfit(ln, ly, 1)
    pred = loga + b * ln
    ss = ((ly - ly.mean()) ** 2).sum()
    return LogLogFit(
        slope=float(b), a=float(np.exp(loga)), r2=float(1 - ((ly - pred) ** 2).sum() / ss) if ss > 0 else 1.0
    )


def measure_bytes_per_vector(
    x: np.ndarray,
    encodings: dict[str, str | None] | None = None,
    *,
    n_small: int | None = None,
    train_size: int = 10_000,
    threads: int = 1,
) -> dict[str, EncodingCost]:
    """Measure each encoding's per-vector cost on real vectors ``x (n, d)``.

    Trains the FAISS index once (on ``train_size`` vectors), adds ``n_small`` vectors and
    serializes, adds the rest and serializes again: the slope excludes fixed costs
    (codebooks, headers).  Recall@10 against exact search for 200 queries held out from
    ``x``.  Encodings whose PQ size does not divide ``d`` are skipped.
    """
    encodings = ENCODINGS if encodings is None else encodings
    x = np.ascontiguousarray(x, np.float32)
    q, db = x[:200], x[200:]
    n_small = n_small or len(db) // 2
    truth = exact_topk(q, db, 10)[1]
    out = {}
    with faiss_threads(threads):
        for name, factory in encodings.items():
            pq = (factory or "").split(",")[-1]
            if pq.startswith("PQ") and x.shape[1] % int(pq[2:].split("x")[0]):
                continue
            t0 = time.perf_counter()
            sizes, found = _two_sizes(factory, db, q, n_small, train_size)
            per = (sizes[1] - sizes[0]) / (len(db) - n_small)
            out[name] = EncodingCost(
                bytes_per_vector=float(per),
                fixed_bytes=float(sizes[1] - per * len(db)),
                recall=neighbour_recall(found, truth, 10),
                build_seconds=time.perf_counter() - t0,
            )
    return out


def _two_sizes(
    factory: str | None, db: np.ndarray, q: np.ndarray, n_small: int, train_size: int
) -> tuple[list[int], np.ndarray]:
    """Serialized sizes after ``n_small`` and after all vectors, and the top-10 found for ``q``."""
    import faiss

    if factory is None:  # sign bits, exhaustive Hamming
        codes = binarize(db)
        idx = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        idx.add(codes[:n_small])
        sizes = [int(faiss.serialize_index_binary(idx).nbytes)]
        idx.add(codes[n_small:])
        sizes.append(int(faiss.serialize_index_binary(idx).nbytes))
        return sizes, idx.search(binarize(q), 10)[1]
    idx = _no_polysemous(faiss.index_factory(db.shape[1], factory, faiss.METRIC_INNER_PRODUCT))
    idx.train(db[: min(len(db), train_size)])
    idx.add(db[:n_small])
    sizes = [int(faiss.serialize_index(idx).nbytes)]
    idx.add(db[n_small:])
    sizes.append(int(faiss.serialize_index(idx).nbytes))
    return sizes, idx.search(q, 10)[1]
