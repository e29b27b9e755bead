"""Worked solutions to the exercises of notebook 03 (``exercise_<n>(**inputs)``)."""

from __future__ import annotations

import numpy as np


def exercise_1(queries: np.ndarray, candidates: np.ndarray, temperature: float) -> float:
    """Mean −log softmax(q·c / τ)[positive], query i's positive being candidate i."""
    logits = queries @ candidates.T / temperature
    logits = logits - logits.max(axis=1, keepdims=True)  # stable softmax
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    n = len(queries)
    return float(-log_p[np.arange(n), np.arange(n)].mean())


def exercise_2(dims: list[int], map_at_r: list[float], n_vectors: float) -> dict[str, float | int]:
    """The smallest d within 0.01 of the best MAP@R, and the float32 bytes of n_vectors of it."""
    scores = np.asarray(map_at_r)
    ok = [d for d, s in zip(dims, scores, strict=True) if s >= scores.max() - 0.01]
    dim = int(min(ok))
    return {"dim": dim, "bytes": float(n_vectors * 4 * dim)}


def exercise_3(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray) -> float:
    """P@1: share of queries whose nearest gallery vector (cosine) has the query's label."""
    from vs_lib.index.exact import exact_topk

    _, top = exact_topk(queries, gallery, 1)
    return float((np.asarray(gallery_labels)[top[:, 0]] == np.asarray(query_labels)).mean())
