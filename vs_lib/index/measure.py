"""How good and how fast an index is: recall against exact search, and queries per second."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .base import VectorIndex
from .exact import neighbour_recall

__all__ = ["SearchMeasurement", "measure_search"]


@dataclass(frozen=True)
class SearchMeasurement:
    """One index on one query set (``dataclasses.asdict`` gives the JSON row).

    ``recall``: mean fraction of the true ``k`` nearest found; ``batch_qps``: queries per
    second with all queries in one call (throughput); ``single_qps``: one query per call (the
    latency view), ``ms_per_query`` its inverse.
    """

    recall: float
    batch_qps: float
    single_qps: float
    ms_per_query: float


def measure_search(
    index: VectorIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int = 10,
    single_budget: float = 0.5,
    max_single: int = 200,
) -> SearchMeasurement:
    """Recall@k of ``index`` against ``truth`` ((n, >= k) true ids) and its throughput on ``queries``.

    Batched: every query in one ``search`` call.  Single: one query per call, for up to
    ``single_budget`` seconds and ``max_single`` queries (at least 3), after one warm-up call.
    """
    queries = np.ascontiguousarray(queries, np.float32)
    t0 = time.perf_counter()
    _, found = index.search(queries, k)
    batch = len(queries) / max(time.perf_counter() - t0, 1e-9)
    index.search(queries[:1], k)  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < min(max_single, len(queries)) and (n < 3 or time.perf_counter() - t0 < single_budget):
        index.search(queries[n : n + 1], k)
        n += 1
    single = n / max(time.perf_counter() - t0, 1e-9)
    return SearchMeasurement(
        recall=neighbour_recall(found, truth, k), batch_qps=batch, single_qps=single, ms_per_query=1000.0 / single
    )
