"""Reference computations for the notebook tests, written without vs_lib's search or metrics.

Raw z-scored pixels (the course's ``pixels`` baseline) ranked by brute-force cosine in NumPy,
and P@1, P@k and mAP@k (AP of the top k divided by min(k, same-class gallery items)) from
their definitions.
"""

from __future__ import annotations

import numpy as np

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def pixel_embeddings(images: np.ndarray) -> np.ndarray:
    z = (images.reshape(len(images), -1) / 255.0 - FASHION_MEAN) / FASHION_STD
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def ranking_figures(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, k: int = 10
) -> dict[str, float]:
    """P@1, P@k and mAP@k of every query against the gallery (row vectors, cosine)."""
    top = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :k]
    rel = gallery_labels[top] == query_labels[:, None]
    n_rel = np.bincount(gallery_labels, minlength=int(gallery_labels.max()) + 1)[query_labels]
    ap = [sum(rel[i, : h + 1].mean() for h in np.flatnonzero(rel[i])) / min(k, n_rel[i]) for i in range(len(rel))]
    return {"P@1": float(rel[:, 0].mean()), f"P@{k}": float(rel.mean()), f"mAP@{k}": float(np.mean(ap))}


def pixel_figures(protocol, k: int = 10) -> dict[str, float]:
    """:func:`ranking_figures` of the pixels baseline on an evaluation protocol."""
    q, g = pixel_embeddings(protocol.query_images), pixel_embeddings(protocol.gallery_images)
    return ranking_figures(q, protocol.query_labels, g, protocol.gallery_labels, k)
