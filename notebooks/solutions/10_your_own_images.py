"""Worked solutions of notebook 10's exercises (checked by the notebook's test with VS_SOLVE=1)."""

from __future__ import annotations

import numpy as np


def exercise_1(embeddings: np.ndarray, paths: list[str], k: int = 5) -> float:
    """Category precision@k, leave-one-out, over the eligible queries: plain NumPy.

    The category is the first folder of the path; files at the top of the folder have none,
    and an image is a query when its category holds at least one other image.
    """
    cat = np.array([p.split("/")[0] if "/" in p else "" for p in paths], dtype=object)
    names, counts = np.unique(cat, return_counts=True)
    size = dict(zip(names, counts, strict=True))
    queries = np.array([c != "" and size[c] >= 2 for c in cat])
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)  # an image never retrieves itself
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    hits = cat[top] == cat[:, None]
    return float(hits[queries].mean())


def exercise_2(hashes: np.ndarray, threshold: int) -> int:
    """Pairs i < j of 64-bit hashes within ``threshold`` differing bits, by brute force."""
    bits = np.unpackbits(np.asarray(hashes, dtype=">u8").view(np.uint8).reshape(len(hashes), 8), axis=1)
    differing = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    i, j = np.triu_indices(len(hashes), k=1)
    return int((differing[i, j] <= threshold).sum())


def exercise_3(query: np.ndarray, gallery: np.ndarray, source_row: int) -> int:
    """Rank (1 = first) of the source image: one plus the gallery rows that score higher."""
    scores = gallery @ query
    return int((scores > scores[source_row]).sum()) + 1
