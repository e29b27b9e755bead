"""Shared data of the index tests: clustered unit vectors with NumPy's exact top 10, and
the index kinds and parameters every generic test runs over, each with its recall floor.

Each test module makes its own module-scoped fixtures from these (``make_clustered``,
``build_cases``), so the indexes are built once per module and never shared across modules.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vs_lib import index as vi
from vs_lib.index import VectorIndex

DIM = 32
N = 4000


def numpy_topk(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest inner products, by a full NumPy sort (independent of vs_lib)."""
    return np.argsort(-(queries @ database.T), axis=1, kind="stable")[:, :k]


class Clustered(NamedTuple):
    x: np.ndarray  # (N, DIM) stored vectors
    q: np.ndarray  # (100, DIM) queries
    ids: np.ndarray  # (N,) ids of x: not row numbers
    truth: np.ndarray  # (100, 10) ids of the true 10 nearest, by NumPy


def make_clustered() -> Clustered:
    """Clustered unit vectors, queries drawn afresh from the same clusters, ids that are not row numbers."""
    x = vi.clustered_vectors(N, DIM, n_clusters=40, spread=0.8, seed=3)
    q = vi.synthetic_queries(100, DIM, n_clusters=40, spread=0.8, seed=3)
    ids = np.arange(N, dtype=np.int64) * 7 + 1000
    return Clustered(x, q, ids, ids[numpy_topk(q, x, 10)])


# kind, params, minimum recall@10 against exact search
CASES = [
    ("flat", {}, 0.999),
    ("ivf", {"nlist": 32, "nprobe": 8}, 0.9),
    ("ivfpq", {"nlist": 32, "nprobe": 8, "m": 8}, 0.3),
    ("ivfpq", {"nlist": 32, "nprobe": 8, "m": 8, "rerank": 10}, 0.9),
    ("hnsw", {"M": 16, "ef_search": 64}, 0.9),
    ("lsh", {"nbits": 128}, 0.3),
    ("lsh", {"nbits": 128, "rerank": 10}, 0.85),
    ("tree", {}, 0.999),
    ("tree", {"algorithm": "ball_tree"}, 0.999),
    ("annoy", {"n_trees": 20}, 0.9),
    ("scann", {}, 0.9),
    ("IVF32,SQ8", {}, 0.8),
    ("HNSW16", {}, 0.85),
]
IDS = [f"{k}{'-' + '-'.join(f'{a}{b}' for a, b in p.items()) if p else ''}" for k, p, _ in CASES]


def build_cases(clustered: Clustered) -> dict[str, VectorIndex]:
    """One index of every case holding all of ``clustered``, keyed by its name in ``IDS``."""
    x, ids = clustered.x, clustered.ids
    return {
        name: vi.create(DIM, kind, fingerprint="enc-1", **params).add(x, ids)
        for (kind, params, _), name in zip(CASES, IDS, strict=True)
    }
