"""Parameter sweeps: which builds and query settings a run measures.

Each :class:`Entry` is one build of one algorithm with its query settings; entries of the
same ``group`` are loaded together and timed in the same alternating rounds, so their QPS
ratios share the machine's conditions.  The grids are subsets of ann-benchmarks'
``config.yml`` sweeps for this task (HNSW: ``ef_construction=500``, ``M`` 4–96, ``ef``
10–800; Annoy: 100–400 trees, ``search_k`` 100–400,000; ScaNN: its three Euclidean
groups; pynndescent: ``n_neighbors`` 10–60), chosen where they cross recall 0.90–0.99 on
this data:

- ``full`` (``benchmarks/ann.py --task fashion-mnist-784``): every algorithm and every
  vs_lib kind (``lsh`` hashes angles only: it refuses the Euclidean task, and the report
  says so), with ann-benchmarks' HNSW build (``M=12, ef_construction=500``) for all three
  HNSW libraries; Annoy's recall on the first 2,000 test images (its slow settings would
  take many minutes each on all 10,000), the exact kd-tree's on 100;
- ``quick`` (notebook 04, ``--quick``): cheaper builds (HNSW ``ef_construction=100``) and
  fewer settings, without the slowest builders (pynndescent and usearch take many minutes
  on 60,000 × 784), the exact kd-tree (one query scans most of the gallery) and Milvus;
- ``smoke``: a few settings for tests on a small task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["GRIDS", "Entry"]


@dataclass(frozen=True)
class Entry:
    """One build of ``algorithm`` (a key of :data:`~.algorithms.ALGORITHMS`) and its query
    ``settings``; ``recall_queries`` / ``timing_queries`` cap the queries of slow entries."""

    algorithm: str
    build: dict[str, Any]
    settings: tuple[Any, ...]
    group: str
    recall_queries: int | None = None
    timing_queries: int | None = None
    note: str = field(default="", compare=False)


def kind(
    name: str,
    settings: list[Any],
    group: str,
    knob: str | None = None,
    recall_queries: int | None = None,
    **params: Any,
) -> Entry:
    """A vs_lib kind: ``settings`` are values of ``knob`` (``set_search_params``) or full dicts."""
    values = tuple({knob: v} if knob else v for v in settings)
    return Entry("vs_lib", {"kind": name, **params}, values, group, recall_queries=recall_queries)


EF = [10, 12, 16, 20, 24, 32, 40, 80, 120, 200]
EF_QUICK = [10, 16, 20, 32, 80]
SCANN3 = [[2, 20], [3, 20], [3, 30], [4, 30], [5, 40], [8, 80]]  # ann-benchmarks' scann3 queries
NND20 = [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.2]
SEARCH_K = [100, 400, 1000, 2000, 4000, 10000, 20000]


def _scann(settings: list[list[int]], group: str, **params: Any) -> Entry:
    values = [{"leaves_to_search": leaves, "reorder": reorder} for leaves, reorder in settings]
    return kind("scann", values, group, **params)


def _hnsw_peers(m: int, efc: int, ef: list[int], usearch: bool = True) -> list[Entry]:
    out = [
        kind("hnsw", ef, "graph", "ef_search", M=m, ef_construction=efc),
        Entry("hnswlib", {"M": m, "ef_construction": efc}, tuple(ef), "graph"),
    ]
    if usearch:
        out.append(Entry("usearch", {"M": m, "ef_construction": efc}, tuple(ef), "graph"))
    return out


def _nnd(n_neighbors: int, leaf_size: int, pdm: float, eps: list[float]) -> Entry:
    build = {
        "n_neighbors": n_neighbors,
        "leaf_size": leaf_size,
        "pruning_degree_multiplier": pdm,
        "diversify_prob": 1.0,
    }
    return Entry("pynndescent", build, tuple(eps), "nndescent")


GRIDS: dict[str, list[Entry]] = {
    "full": [
        Entry("bruteforce-numpy", {}, (None,), "exact"),
        kind("flat", [None], "exact"),
        Entry("vs_lib", {"kind": "tree", "leaf_size": 40}, (None,), "exact", recall_queries=100, timing_queries=3),
        *_hnsw_peers(12, 500, EF),
        kind("hnsw", [8, 10, 16, 32, 64, 128], "graph", "ef_search"),  # vs_lib's default build
        kind("ivf", [1, 5, 10, 20, 50, 100], "partition", "nprobe", nlist=1024),
        kind("ivfpq", [5, 10, 20, 50], "partition", "nprobe", nlist=1024, m=56, rerank=10),
        _scann(SCANN3, "partition", n_leaves=100, dims_per_block=4),
        *[kind("annoy", SEARCH_K, "trees", "search_k", n_trees=t, recall_queries=2000) for t in (10, 30, 100)],
        kind("lsh", [None], "partition", nbits=256),  # hashes angles: refused for Euclidean, recorded as such
        _nnd(20, 24, 1.5, NND20),
        Entry(
            "vs_lib",
            {"kind": "milvus", "index_type": "HNSW", "index_params": {"M": 12, "efConstruction": 200}},
            tuple({"ef": ef} for ef in (16, 32, 64, 128)),
            "milvus",
            timing_queries=100,
        ),
    ],
    "quick": [
        Entry("bruteforce-numpy", {}, (None,), "exact", timing_queries=60),
        kind("flat", [None], "exact"),
        *_hnsw_peers(12, 100, EF_QUICK, usearch=False),
        kind("ivf", [5, 10, 20, 50], "partition", "nprobe", nlist=1024),
        _scann([[2, 20], [3, 30], [4, 30], [8, 80]], "partition", n_leaves=100, dims_per_block=4),
        *[kind("annoy", [1000, 4000, 20000], "trees", "search_k", n_trees=t) for t in (10, 30, 100)],
    ],
    "smoke": [
        Entry("bruteforce-numpy", {}, (None,), "exact"),
        kind("flat", [None], "exact"),
        Entry("vs_lib", {"kind": "tree", "leaf_size": 40}, (None,), "exact", recall_queries=20, timing_queries=3),
        *_hnsw_peers(8, 40, [10, 40], usearch=False),
        kind("ivf", [2, 8], "partition", "nprobe", nlist=32),
        _scann([[2, 20], [8, 80]], "partition", n_leaves=32, dims_per_block=4, min_train=100),
        *[kind("annoy", [200, 2000], "trees", "search_k", n_trees=t) for t in (3, 10)],
    ],
}
