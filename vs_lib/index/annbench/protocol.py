"""The ann-benchmarks protocol of ``fashion-mnist-784-euclidean``: data, ground truth, recall, frontier.

What ann-benchmarks does (Aumüller, Bernhardsson, Faithfull: "ANN-Benchmarks", 2018; code at
github.com/erikbern/ann-benchmarks), and what this module reproduces:

- **data**: the 60,000 Fashion-MNIST training images are the gallery, the 10,000 test images
  the queries, each the raw 784 pixel values as float32 in 0..255 (no scaling); Euclidean
  distance; ``k = 10``;
- **ground truth**: the exact 100 nearest training images of every test image, with their
  Euclidean (not squared) distances;
- **recall** ("k-nn" recall): the distances of the returned ids are *recomputed* from the
  vectors, never taken from the library; a returned point counts when its distance is at
  most the true ``k``-th distance + 1e-3, so a tie with the ``k``-th neighbour is a hit,
  whichever of the tied points a library returns;
- **queries per second**: one query per call, the call alone timed; one CPU;
- **the frontier**: per algorithm, the settings not beaten by a faster setting of the same
  algorithm with at least the same recall (``pareto_frontier``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import config
from ..exact import exact_topk, neighbour_recall

K = 10
EPSILON = 1e-3  # ann-benchmarks' knn_threshold: true k-th distance + epsilon
TRUTH_COUNT = 100  # neighbours per query in ann-benchmarks' files
TARGETS = (0.90, 0.95, 0.99)

__all__ = [
    "EPSILON",
    "TARGETS",
    "GroundTruth",
    "K",
    "Task",
    "best_at_recall",
    "fashion_mnist_784",
    "ground_truth",
    "id_recall",
    "knn_recall",
    "pareto_frontier",
]


@dataclass(frozen=True)
class Task:
    """A nearest-neighbour task: ``train`` ``(n, d)`` float32 gallery, ``test`` ``(q, d)`` float32
    queries, Euclidean distance, ``k`` neighbours; ``name`` as ann-benchmarks spells it."""

    name: str
    train: np.ndarray
    test: np.ndarray
    k: int = K

    @property
    def signature(self) -> str:
        """What a cached build or ground truth depends on: name and sizes."""
        return f"{self.name}-{len(self.train)}x{self.train.shape[1]}-{len(self.test)}"


def fashion_mnist_784(n_train: int | None = None, n_test: int | None = None) -> Task:
    """ann-benchmarks' ``fashion-mnist-784-euclidean``: raw pixels as float32 0..255.

    ``n_train`` / ``n_test``: the first rows only (a smaller task for quick checks; the
    ann-benchmarks task is all 60,000 / 10,000)."""
    from ... import data

    fm = data.load_fashion_mnist(download=False)
    train = np.ascontiguousarray(fm.train_images[:n_train].reshape(-1, 784), dtype=np.float32)
    test = np.ascontiguousarray(fm.test_images[:n_test].reshape(-1, 784), dtype=np.float32)
    full = n_train is None and n_test is None
    return Task("fashion-mnist-784-euclidean" if full else f"fashion-mnist-784-euclidean-{len(train)}", train, test)


# ---------------------------------------------------------------------- ground truth
@dataclass(frozen=True)
class GroundTruth:
    """The exact ``count`` nearest gallery rows of every query: ``neighbors`` ``(q, count)``
    int64 rows, ``distances`` ``(q, count)`` float64 Euclidean, ascending (ties by row)."""

    neighbors: np.ndarray
    distances: np.ndarray
    seconds: float = 0.0


def _exact_distances(train: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Euclidean distances of ``queries[i]`` to ``train[rows[i]]``, in float64 ``(q, m)``."""
    out = np.empty(rows.shape, np.float64)
    step = max(1, (1 << 22) // max(1, rows.shape[1] * train.shape[1]))  # ~32 MB of float64 at a time
    for s in range(0, len(rows), step):
        r = rows[s : s + step]
        diff = train[r.ravel()].reshape(*r.shape, -1).astype(np.float64) - queries[s : s + step, None, :]
        out[s : s + step] = np.sqrt(np.einsum("qmd,qmd->qm", diff, diff))
    return out


def ground_truth(task: Task, count: int = TRUTH_COUNT, cache_dir: Path | None = None) -> GroundTruth:
    """Exact neighbours of every test row, cached in ``cache_dir`` (written atomically).

    Candidates come from :func:`~vs_lib.index.exact.exact_topk` (float32 matrix products,
    ``count + 20`` per query); their distances are then recomputed in float64 — exact on
    integer pixels — and sorted by (distance, row), as ann-benchmarks recomputes the
    distances of its brute-force candidates."""
    path = None if cache_dir is None else Path(cache_dir) / f"groundtruth-{task.signature}-k{count}.npz"
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return GroundTruth(z["neighbors"], z["distances"], float(z["seconds"]))
        except (ValueError, OSError, KeyError, EOFError):
            pass  # a damaged cache file is recomputed
    t0 = time.perf_counter()
    count = min(count, len(task.train))
    extra = min(len(task.train), count + 20)
    _, cand = exact_topk(task.test, task.train, extra, metric="l2", chunk=256)
    dist = _exact_distances(task.train, task.test, cand)
    order = np.lexsort((cand, dist), axis=1)[:, :count]
    truth = GroundTruth(np.take_along_axis(cand, order, 1), np.take_along_axis(dist, order, 1))
    truth = GroundTruth(truth.neighbors, truth.distances, time.perf_counter() - t0)
    if path is not None:
        with config.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, neighbors=truth.neighbors, distances=truth.distances, seconds=truth.seconds)
    return truth


# ---------------------------------------------------------------------- recall
def knn_recall(
    train: np.ndarray,
    queries: np.ndarray,
    true_distances: np.ndarray,
    found: np.ndarray,
    k: int = K,
    epsilon: float = EPSILON,
    *,
    per_query: bool = False,
) -> Any:
    """ann-benchmarks' k-nn recall of ``found`` ``(q, >= k)`` gallery rows (``-1``: none).

    The distance of each of the first ``k`` returned rows is recomputed from ``train`` and
    ``queries``; a row is a hit when that distance is at most ``true_distances[:, k - 1] +
    epsilon``.  Returns the mean of hits / ``k`` (or the ``(q,)`` array with ``per_query``)."""
    found = np.asarray(found)[:, :k]
    q = len(found)
    valid = found >= 0
    rows = np.where(valid, found, 0).astype(np.int64)
    d = _exact_distances(train, np.asarray(queries)[:q], rows)
    threshold = np.asarray(true_distances, np.float64)[:q, k - 1] + epsilon
    hits = ((d <= threshold[:, None]) & valid).sum(1) / k
    return hits if per_query else float(hits.mean())


def id_recall(true_neighbors: np.ndarray, found: np.ndarray, k: int = K) -> float:
    """Plain id recall: the share of the true ``k`` rows among the ``k`` returned (ties not forgiven)."""
    found = np.asarray(found)[:, :k]
    return neighbour_recall(found, np.asarray(true_neighbors)[: len(found), :k], k)


# ---------------------------------------------------------------------- frontier
def pareto_frontier(points: Sequence[Any], qps: str = "qps") -> list[Any]:
    """The settings on an algorithm's recall–QPS frontier, by ascending recall.

    ann-benchmarks' ``create_pointset``: sort by QPS, fastest first, and keep a point when
    its recall beats every faster one.  ``points``: objects (or dicts) with ``recall`` and
    the attribute named by ``qps``."""

    def get(p: Any, name: str) -> float:
        return float(p[name] if isinstance(p, dict) else getattr(p, name))

    best, keep = -1.0, []
    for p in sorted(points, key=lambda p: (-get(p, qps), -get(p, "recall"))):
        if get(p, "recall") > best:
            best = get(p, "recall")
            keep.append(p)
    return sorted(keep, key=lambda p: get(p, "recall"))


def best_at_recall(points: Sequence[Any], target: float, qps: str = "qps") -> Any | None:
    """The fastest point (by ``qps``) whose recall is at least ``target``; ``None`` if none reaches it."""

    def get(p: Any, name: str) -> float:
        return float(p[name] if isinstance(p, dict) else getattr(p, name))

    ok = [p for p in points if get(p, "recall") >= target]
    return max(ok, key=lambda p: get(p, qps)) if ok else None
