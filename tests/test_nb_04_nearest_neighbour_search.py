"""Notebook 04 in the smoke profile: its measured figures are consistent.

Recall in the notebook is scored against ``index.exact_topk`` (matrix products), not against
a FAISS index, so an exact index scoring (nearly) 1 is a real agreement of two computations.
Two float32 computations may order a near-tie at the 10th place differently (scores equal to
1e-6 happen among 60,000 images), hence ``EXACT`` rather than 1.
"""

import itertools

import pytest

pytestmark = pytest.mark.notebooks
EXACT = 0.995  # one swapped near-tie in 200 true neighbours, no more


@pytest.fixture(scope="module")
def results(run_notebook):
    return run_notebook("04_nearest_neighbour_search")


def test_exact_indexes_agree_with_the_independent_truth(results):
    flat = [r for r in results["sweeps"] if r["kind"] == "flat"]
    assert len(flat) == 1 and flat[0]["recall"] >= EXACT  # FAISS's scan vs exact_topk
    tree = [r for r in results["sweeps"] if r["kind"] == "tree"]
    assert tree[0]["recall"] >= EXACT  # the kd-tree is exact too
    assert 4 * 128 <= results["flat_bytes_per_vector"] < 4 * 128 + 64


def test_sweeps_trade_recall_for_speed(results):
    ivf = sorted((r for r in results["sweeps"] if r["kind"] == "ivf"), key=lambda r: r["value"])
    recalls = [r["recall"] for r in ivf]
    assert recalls[-1] >= 0.95 and recalls[0] < recalls[-1]
    assert all(b >= a - 0.02 for a, b in itertools.pairwise(recalls))  # more cells probed, more recall
    hnsw = [r["recall"] for r in results["sweeps"] if r["kind"] == "hnsw"]
    assert max(hnsw) >= 0.9
    rerank = [r for r in results["sweeps"] if r["family"] == "IVF-PQ m=16 + re-rank"]
    codes = [r for r in results["sweeps"] if r["family"] == "IVF-PQ (codes only)"]
    assert max(r["recall"] for r in rerank) >= max(r["recall"] for r in codes)
    # codes are m bytes, but tiny smoke databases still pay for the codebooks and centroids
    assert min(r["bytes_per_vector"] for r in codes) < results["flat_bytes_per_vector"] / 4


def test_growth_covers_sizes_and_labels_synthetic(results):
    ns = sorted({g["N"] for g in results["growth"]})
    assert len(ns) >= 3
    exact = {g["N"]: g for g in results["growth"] if g["index"] == "exact (flat)"}
    assert all(exact[n]["recall"] >= EXACT for n in ns)  # against exact_topk at every size
    assert all(0.0 <= g["synthetic_share"] < 1.0 for g in results["growth"])


def test_recommendation_follows_the_measurements(results):
    """The default the notebook recommends is the one its own measurements pick."""
    exact_ms, budget = results["exact_ms_per_query"], results["latency_budget_ms"]
    fastest = results["fastest_approximate"]
    if exact_ms <= budget or fastest is None:
        assert results["recommended_default"] == "flat"
    else:
        assert results["recommended_default"] == fastest["kind"]
    if fastest is not None:
        assert fastest["recall"] >= 0.95
        faster_rows = [r for r in results["sweeps"] if r["kind"] != "flat" and r["recall"] >= 0.95]
        assert fastest["single_qps"] == pytest.approx(max(r["single_qps"] for r in faster_rows))
