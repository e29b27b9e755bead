"""How good is search on a folder whose subfolders say what each image shows?

A folder of photos has no labels, but its sub-folders often act as them
(``animals/birds/owl.png``): the first folder level is a *category*, the second a
*subcategory*.  :func:`folder_labels` reads them from the paths; :func:`leave_one_out`
lets every eligible image query all the others and scores the ranked lists with the
course's metrics (:mod:`vs_lib.metrics`): precision@k and AP@10.

Eligibility (the same rules for every encoder compared):

- ``"category"``: the first folder; every image whose category holds at least two images
  is a query;
- ``"subcategory"``: the first two folders; an image lying directly in a category folder
  has none, and neither it nor an image alone in its subcategory is a query (no possible
  relevant result) — both stay in the gallery as distractors.

AP@10 divides by ``min(R, 10)`` with R the relevant images in the gallery, so a perfect
top 10 scores 1 even for a large class.  Metrics are averaged over queries ("micro", the
headline; the 158 letters of the stamps' alphabet weigh on it) and over classes
("macro": each class counts once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..index.exact import exact_topk

__all__ = ["LEVELS", "FolderLabels", "LeaveOneOut", "folder_labels", "leave_one_out", "random_crops", "rank_of"]

LEVELS = ("category", "subcategory")


@dataclass(frozen=True)
class FolderLabels:
    """``labels`` (n,) str and ``queries`` (n,) bool: which images are scored as queries."""

    level: str
    labels: np.ndarray
    queries: np.ndarray


def folder_labels(paths: Sequence[str], level: str = "subcategory") -> FolderLabels:
    """Labels from the folder part of each path (see the module doc for the query rules)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    parts = [p.split("/") for p in paths]
    if level == "category":
        labels = np.array([q[0] if len(q) > 1 else "" for q in parts], dtype=object)
    else:
        labels = np.array(["/".join(q[:2]) if len(q) > 2 else "" for q in parts], dtype=object)
    counts = Counter(labels.tolist())
    queries = np.array([lab != "" and counts[lab] >= 2 for lab in labels])
    return FolderLabels(level, labels, queries)


@dataclass
class LeaveOneOut:
    """Per-query ``precision`` {k: (q,)} and ``ap`` (q,) at cut-off ``k_max``, with the query ``labels``
    and ``positions`` (q, k_max) of the results in the gallery."""

    level: str
    labels: np.ndarray
    precision: dict[int, np.ndarray]
    ap: np.ndarray
    positions: np.ndarray
    query_rows: np.ndarray

    def micro(self) -> dict[str, float]:
        out = {f"P@{k}": float(v.mean()) for k, v in self.precision.items()}
        out["mAP@10"] = float(self.ap.mean())
        return out

    def macro(self) -> dict[str, float]:
        classes = np.unique(self.labels)
        out = {
            f"P@{k}": float(np.mean([v[self.labels == c].mean() for c in classes])) for k, v in self.precision.items()
        }
        out["mAP@10"] = float(np.mean([self.ap[self.labels == c].mean() for c in classes]))
        return out


def leave_one_out(
    embeddings: np.ndarray, paths: Sequence[str], level: str = "subcategory", ks: Sequence[int] = (1, 5, 10)
) -> LeaveOneOut:
    """Each eligible image queries all the others (cosine, exact top-k); precision@k and AP@10.

    ``embeddings`` (n, d) float32, L2-normalised, row i the image of ``paths[i]``.
    """
    fl = folder_labels(paths, level)
    k_max = max(max(ks), 10)
    rows = np.flatnonzero(fl.queries)
    x = np.ascontiguousarray(embeddings, np.float32)
    _, pos = exact_topk(x[rows], x, k_max, exclude=rows)
    rel = (fl.labels[pos] == fl.labels[rows][:, None]).astype(np.int64)
    counts = Counter(fl.labels.tolist())
    n_relevant = np.minimum(np.array([counts[lab] - 1 for lab in fl.labels[rows]]), 10)
    precision = {k: metrics.precision_at_k_batch(rel, k) for k in ks}
    ap = metrics.average_precision_batch(rel[:, :10], n_relevant=n_relevant)
    return LeaveOneOut(level, fl.labels[rows], precision, ap, pos, rows)


def random_crops(
    size: tuple[int, int], fraction: float, n: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """``n`` boxes covering ``fraction`` of an image of ``size`` (w, h), aspect ratio 3/4..4/3, inside it."""
    w, h = size
    boxes = []
    for _ in range(n):
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        bw = max(1, min(w, int(np.sqrt(fraction * w * h * aspect))))
        bh = max(1, min(h, int(np.sqrt(fraction * w * h / aspect))))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        boxes.append((x0, y0, x0 + bw, y0 + bh))
    return boxes


def rank_of(query: np.ndarray, gallery: np.ndarray, target: int) -> int:
    """Rank (1 = first) of gallery row ``target`` for ``query`` (d,) by cosine; ties count in its favour."""
    scores = np.asarray(gallery, np.float32) @ np.asarray(query, np.float32)
    return int((scores > scores[target]).sum()) + 1
