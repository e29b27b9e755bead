"""Worked solutions to the exercises of notebook 00 (overview)."""

from __future__ import annotations

import numpy as np


def exercise_1(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Positions ``(q, k)`` of the ``k`` nearest gallery rows by Euclidean distance, nearest first.

    ``‖q − g‖² = ‖q‖² − 2 q·g + ‖g‖²``: one matrix product gives every squared distance.
    """
    q = queries.astype(np.float64)
    g = gallery.astype(np.float64)
    squared = (q * q).sum(1)[:, None] - 2 * q @ g.T + (g * g).sum(1)[None, :]
    nearest = np.argpartition(squared, k, axis=1)[:, :k]  # the k smallest, unordered
    order = np.argsort(np.take_along_axis(squared, nearest, axis=1), axis=1, kind="stable")
    return np.take_along_axis(nearest, order, axis=1)


def exercise_2(probes: np.ndarray, points: np.ndarray) -> float:
    """Mean over probes of nearest / farthest Euclidean distance."""
    p = probes.astype(np.float64)
    x = points.astype(np.float64)
    squared = (p * p).sum(1)[:, None] - 2 * p @ x.T + (x * x).sum(1)[None, :]
    distances = np.sqrt(np.clip(squared, 0.0, None))
    return float(np.mean(distances.min(axis=1) / distances.max(axis=1)))


def exercise_3(
    queries: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int
) -> float:
    """P@k of the dot product between L2-normalised rows (= cosine similarity)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = q @ g.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]  # the k best; their order does not matter for P@k
    return float(np.mean(gallery_labels[top] == query_labels[:, None]))
