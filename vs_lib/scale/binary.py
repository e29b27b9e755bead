"""Binary embeddings, as Pinterest ships them: one sign bit per dimension, Hamming ranking.

``binarize(x)`` keeps the sign of each dimension, 1 bit instead of 32
(``np.packbits(x > 0)``).  The share of differing sign bits estimates the angle between two
vectors only when the hyperplanes are random (random-hyperplane LSH): the axes of a trained
embedding are not — a few dimensions may carry most of the variance, others almost none.
:func:`sign_transform` gives the rotation to apply first: ``"random"`` (a random orthogonal
matrix) or ``"itq"`` (FAISS's iterative quantisation, a rotation learned to lose the least
by taking signs), or ``"axes"`` (none).  FAISS binary indexes rank by Hamming distance
(:func:`binary_index`); :func:`hamming_distances` is the NumPy bit-count reference;
:func:`binary_recall` measures recall@k against exact float search, optionally with the
Hamming top ``rerank·k`` re-scored by the float vectors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..index import exact_topk, faiss_threads, neighbour_recall

__all__ = [
    "SIGN_TRANSFORMS",
    "BinaryRecall",
    "binarize",
    "binary_index",
    "binary_recall",
    "hamming_distances",
    "sign_transform",
]

SIGN_TRANSFORMS = ("axes", "random", "itq")
Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BinaryRecall:
    """One binary index: recall@k against exact float search, its size, build time and speed."""

    kind: str
    recall: float
    code_bytes_per_vector: float
    index_bytes_per_vector: float
    build_seconds: float
    qps: float


def binarize(x: np.ndarray) -> np.ndarray:
    """Sign bits of ``(n, d)`` float vectors packed 8 per byte: ``(n, ceil(d/8))`` uint8."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected (n, d) vectors, got shape {x.shape}")
    return np.packbits(x > 0, axis=1)


def sign_transform(kind: str, train: np.ndarray, *, seed: int = 0, n_iter: int = 50) -> Transform:
    """The map applied to ``(n, d)`` float32 vectors before their signs are taken.

    ``"axes"``: the identity (the embedding's own axes); ``"random"``: ``x @ R`` with ``R`` a
    random ``(d, d)`` orthogonal matrix (QR of a Gaussian matrix, ``seed``), so each bit is a
    random hyperplane; ``"itq"``: FAISS's ``ITQTransform`` trained on ``train`` (centring, then
    the rotation that ``n_iter`` rounds of iterative quantisation find).  Returns float32.
    """
    train = np.ascontiguousarray(train, np.float32)
    if train.ndim != 2:
        raise ValueError(f"expected (n, d) training vectors, got shape {train.shape}")
    d = train.shape[1]
    if kind == "axes":
        return lambda x: np.asarray(x, np.float32)
    if kind == "random":
        q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
        rot = (q * np.sign(np.diag(r))).astype(np.float32)  # Haar-distributed orthogonal matrix
        return lambda x: np.asarray(x, np.float32) @ rot
    if kind == "itq":
        import faiss

        itq = faiss.ITQTransform(d, d, False)
        itq.max_train_per_dim = max(10, len(train) // d + 1)
        itq.itq.max_iter = int(n_iter)
        itq.itq.seed = int(seed)
        itq.train(train)
        return lambda x: itq.apply(np.ascontiguousarray(x, np.float32))
    raise ValueError(f"sign transform must be one of {SIGN_TRANSFORMS}, got {kind!r}")


def hamming_distances(q_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Reference Hamming distances by NumPy bit counts: ``(nq, n)`` int32 (independent of FAISS)."""
    q_codes, codes = np.asarray(q_codes, np.uint8), np.asarray(codes, np.uint8)
    out = np.empty((len(q_codes), len(codes)), np.int32)
    step = max(1, 2_000_000 // max(1, codes.size))
    for s in range(0, len(q_codes), step):
        out[s : s + step] = np.bitwise_count(q_codes[s : s + step, None, :] ^ codes[None, :, :]).sum(-1, dtype=np.int32)
    return out


def binary_index(
    codes: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 16, M: int = 32
) -> Any:
    """A FAISS binary index over ``(n, nbytes)`` uint8 codes: ``"flat"`` (exhaustive Hamming,
    ``IndexBinaryFlat``), ``"ivf"`` (``IndexBinaryIVF``, ``nlist`` cells), ``"hnsw"``."""
    import faiss

    codes = np.ascontiguousarray(codes, np.uint8)
    nbits = codes.shape[1] * 8
    idx: Any
    if kind == "flat":
        idx = faiss.IndexBinaryFlat(nbits)
    elif kind == "ivf":
        nlist = nlist or max(1, min(4096, int(4 * math.sqrt(len(codes)))))
        quantizer: Any = faiss.IndexBinaryFlat(nbits)
        idx = faiss.IndexBinaryIVF(quantizer, nbits, int(nlist))
        idx.own_fields = True
        quantizer.this.disown()
        idx.train(codes)
        idx.nprobe = int(nprobe)
    elif kind == "hnsw":
        idx = faiss.IndexBinaryHNSW(nbits, int(M))
    else:
        raise ValueError(f"binary index kind must be 'flat', 'ivf' or 'hnsw', got {kind!r}")
    idx.add(codes)
    return idx


def binary_recall(
    database: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    kinds: Sequence[str] = ("flat",),
    truth: np.ndarray | None = None,
    rerank: int = 0,
    threads: int = 1,
    transform: Transform | None = None,
    label: str = "",
) -> list[BinaryRecall]:
    """Recall@k of sign-binarised codes against exact float search (inner product), per kind.

    ``truth``: true top-k rows of ``database`` (by :func:`~vs_lib.index.exact_topk` when not
    given).  ``rerank > 0`` also reports the Hamming top ``rerank·k`` re-scored with the float
    vectors (whose 4·d bytes per vector it then counts).  QPS with ``threads`` FAISS threads
    (1 = per core, and steady on a shared machine).  ``transform`` (see
    :func:`sign_transform`) maps the vectors before their signs are taken; ``label`` is
    appended to each row's ``kind``.
    """
    database, queries = np.asarray(database, np.float32), np.asarray(queries, np.float32)
    truth = exact_topk(queries, database, k)[1] if truth is None else truth
    f = transform or (lambda x: x)
    codes, q_codes = binarize(f(database)), binarize(f(queries))
    with faiss_threads(threads):
        rows = []
        for kind in kinds:
            row, idx = _measure_kind(kind, codes, q_codes, truth, k)
            row = replace(row, kind=row.kind + label)
            rows.append(row)
            if rerank:
                rows.append(_reranked(row, idx, q_codes, queries, database, truth, k, rerank))
    return rows


def _measure_kind(
    kind: str, codes: np.ndarray, q_codes: np.ndarray, truth: np.ndarray, k: int
) -> tuple[BinaryRecall, Any]:
    import faiss

    t0 = time.perf_counter()
    idx = binary_index(codes, kind)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, found = idx.search(q_codes, k)
    secs = time.perf_counter() - t1
    row = BinaryRecall(
        kind=f"binary-{kind}",
        recall=neighbour_recall(found, truth, k),
        code_bytes_per_vector=codes.shape[1],
        index_bytes_per_vector=faiss.serialize_index_binary(idx).nbytes / len(codes),
        build_seconds=build,
        qps=len(q_codes) / max(secs, 1e-9),
    )
    return row, idx


def _reranked(
    row: BinaryRecall,
    idx: Any,
    q_codes: np.ndarray,
    queries: np.ndarray,
    database: np.ndarray,
    truth: np.ndarray,
    k: int,
    rerank: int,
) -> BinaryRecall:
    """The Hamming top ``rerank·k`` re-ordered by exact inner products with the float vectors."""
    _, cand = idx.search(q_codes, k * rerank)
    valid = cand >= 0
    sims = np.einsum("nd,ncd->nc", queries, database[np.where(valid, cand, 0)])
    sims[~valid] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return replace(
        row,
        kind=f"{row.kind}+rerank{rerank}",
        recall=neighbour_recall(np.take_along_axis(np.where(valid, cand, -1), order, 1), truth, k),
        index_bytes_per_vector=row.index_bytes_per_vector + 4 * database.shape[1],
    )
