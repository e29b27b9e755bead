"""Exact nearest neighbours: the one brute-force top-k of the library.

Everything that needs the true neighbours of a set of queries calls :func:`exact_topk`:
ground truth for the recall of approximate indexes, offline evaluation, the look-alikes
mined for self-supervised training, the linear-scan baseline of notebook 04.  It is a
chunked matrix product followed by a partial sort (``torch.topk``), O(q·n·d) work and
O(chunk·n) memory.

Conventions: ``queries`` ``(q, d)`` and ``gallery`` ``(n, d)`` float32; with
``metric="ip"`` (the course default, on L2-normalised vectors) scores are inner products
and higher is better; with ``metric="l2"`` scores are squared Euclidean distances and
lower is better.  Results are *positions* (row numbers in ``gallery``), best first; map
them to image ids with ``ids[positions]``.
"""

from __future__ import annotations

import numpy as np

METRICS = ("ip", "l2")

__all__ = ["exact_topk", "neighbour_recall"]


def _as_matrix(x: object, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a (n, d) array, got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def exact_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    metric: str = "ip",
    exclude: np.ndarray | None = None,
    chunk: int = 1024,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best gallery rows of every query by linear scan.

    ``exclude``: ``(q,)`` int64, a gallery row each query must not retrieve (``-1``: none),
    e.g. ``np.arange(n)`` when the queries are the gallery itself (leave-one-out).

    Returns ``(scores (q, k) float32, positions (q, k) int64)``, best first.  Raises
    ``ValueError`` when ``k`` exceeds what a query can retrieve.
    """
    import torch

    Q = _as_matrix(queries, "queries")
    G = _as_matrix(gallery, "gallery")
    if Q.shape[1] != G.shape[1]:
        raise ValueError(f"queries have dimension {Q.shape[1]} but the gallery has {G.shape[1]}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    excl = None
    if exclude is not None:
        excl = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if excl.shape != (len(Q),):
            raise ValueError(f"exclude must have shape ({len(Q)},), got {excl.shape}")
        if excl.size and excl.max() >= len(G):
            raise ValueError(f"exclude holds row {int(excl.max())} but the gallery has {len(G)} rows")
    available = len(G) - int(excl is not None and bool((excl >= 0).any()))
    if k > available:
        raise ValueError(f"k={k} is larger than the {available} gallery rows a query can retrieve")
    k = int(k)
    scores = np.empty((len(Q), k), dtype=np.float32)
    positions = np.empty((len(Q), k), dtype=np.int64)
    Gt = torch.from_numpy(G)
    g_sq = (Gt * Gt).sum(1) if metric == "l2" else None
    starts = range(0, len(Q), int(chunk))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="exact top-k", unit="chunk")
    with torch.inference_mode():
        for s in starts:
            q = torch.from_numpy(Q[s : s + int(chunk)])
            sims = q @ Gt.T  # (c, n): higher is better
            if g_sq is not None:  # -(|q|^2 - 2 q.g + |g|^2), negated squared distance
                sims = 2 * sims - g_sq[None, :] - (q * q).sum(1, keepdim=True)
            if excl is not None:
                rows = np.flatnonzero(excl[s : s + len(q)] >= 0)
                if rows.size:
                    sims[torch.from_numpy(rows), torch.from_numpy(excl[s : s + len(q)][rows])] = -float("inf")
            top = torch.topk(sims, k, dim=1, largest=True, sorted=True)
            vals = top.values.numpy()
            scores[s : s + len(q)] = np.maximum(-vals, 0.0) if g_sq is not None else vals
            positions[s : s + len(q)] = top.indices.numpy()
    return scores, positions


def neighbour_recall(found: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Mean fraction of the true ``k`` nearest neighbours present in the ``k`` found.

    ``found`` and ``truth``: ``(q, >= k)`` ids (or positions), ``-1`` marks padding and never
    matches.  This is the recall of an *index* against exact search, not the ranking metric
    ``metrics.recall_at_k`` (relevant items found among all relevant items).
    """
    found, truth = np.asarray(found), np.asarray(truth)
    k = int(k or truth.shape[1])
    hits = [len(np.intersect1d(f[:k][f[:k] >= 0], t[:k])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k) if hits else float("nan")
