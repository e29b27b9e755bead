"""Measuring an index (recall and queries per second against known answers with a fake
clock) and the synthetic vectors used to grow a database."""

from __future__ import annotations

import numpy as np
import pytest

from vs_lib import index as vi


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Small arrays: one OpenMP thread avoids spin-waiting on a shared machine."""
    with vi.faiss_threads(1):
        yield


# ---------------------------------------------------------------------- measurement
class ScriptedIndex:
    """Returns fixed ids and advances a fake clock by ``cost`` seconds per call."""

    def __init__(self, found: np.ndarray, clock: list[float], cost: float):
        self.found, self.clock, self.cost, self.calls = found, clock, cost, []

    def search(self, queries, k):
        self.clock[0] += self.cost
        self.calls.append(len(queries))
        return np.zeros((len(queries), k), np.float32), self.found[: len(queries), :k]


def test_measure_search_against_known_answers(monkeypatch):
    from vs_lib.index import measure

    clock = [100.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    truth = np.arange(50 * 10).reshape(50, 10)
    found = truth.copy()
    found[:, 7:] = -1  # 7 of the true 10 found in every row, padding never counts
    found[::2, 0] = 10**6  # and every other row misses one more: mean (7 + 6) / 2 / 10
    index = ScriptedIndex(found, clock, cost=0.01)
    m = vi.measure_search(index, np.zeros((50, 4), np.float32), truth, k=10, single_budget=0.045, max_single=30)
    assert m.recall == pytest.approx(0.65)
    assert m.batch_qps == pytest.approx(50 / 0.01)  # one call for all 50 queries
    # single queries: one warm-up, then one call per query until 0.045 s have passed (5 calls)
    assert index.calls == [50, 1] + [1] * 5
    assert m.single_qps == pytest.approx(100.0) and m.ms_per_query == pytest.approx(10.0)
    # a wider truth is cut to k columns
    assert vi.measure_search(
        index, np.zeros((50, 4)), np.c_[truth, truth], k=10, single_budget=0
    ).recall == pytest.approx(0.65)


# ---------------------------------------------------------------------- synthetic vectors
def test_synthetic_stream_is_chunked_and_deterministic():
    chunks = list(vi.synthetic_stream(2500, 16, n_clusters=5, chunk=1000, seed=4))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    again = vi.clustered_vectors(2500, 16, n_clusters=5, seed=4)
    np.testing.assert_array_equal(np.concatenate(chunks), again)
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1, atol=1e-5)
    queries = vi.synthetic_queries(50, 16, n_clusters=5, seed=4)
    assert not np.isin(queries, again).all(axis=1).any()  # fresh draws, not copies of stored vectors
    assert not np.array_equal(again, vi.clustered_vectors(2500, 16, n_clusters=5, seed=5))


def test_synthetic_offsets_live_in_the_intrinsic_subspace():
    """Without noise, points of one cluster differ from their centre inside an r-dim subspace."""
    x = vi.clustered_vectors(400, 32, n_clusters=1, spread=0.3, intrinsic_dim=3, seed=0)
    x_iso = vi.clustered_vectors(400, 32, n_clusters=1, spread=0.3, seed=0)

    def rank(a: np.ndarray) -> int:  # directions with real spread (normalising bends the offsets a little)
        return int((np.linalg.svd(a - a.mean(0), compute_uv=False) > 1e-2 * np.sqrt(len(a))).sum())

    assert rank(x) <= 4 < 20 <= rank(x_iso)
