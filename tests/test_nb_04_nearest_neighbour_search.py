"""Notebook 04 in the smoke profile: its measured figures are consistent."""
import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def results(run_notebook):
    return run_notebook("04_nearest_neighbour_search")


def test_exact_search_is_the_reference(results):
    flat = [r for r in results["sweeps"] if r["kind"] == "flat"]
    assert len(flat) == 1 and flat[0]["recall"] == pytest.approx(1.0)
    tree = [r for r in results["sweeps"] if r["kind"] == "tree"]
    assert tree[0]["recall"] == pytest.approx(1.0)  # the kd-tree is exact
    assert results["exact_ms_per_query"] > 0
    assert 4 * 128 <= results["flat_bytes_per_vector"] < 4 * 128 + 64


def test_sweeps_trade_recall_for_speed(results):
    ivf = sorted((r for r in results["sweeps"] if r["kind"] == "ivf"), key=lambda r: r["value"])
    recalls = [r["recall"] for r in ivf]
    assert recalls[-1] >= 0.95 and recalls[0] < recalls[-1]
    assert all(b >= a - 0.02 for a, b in zip(recalls, recalls[1:]))  # more cells probed, more recall
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
    assert all(exact[n]["recall"] == pytest.approx(1.0) for n in ns)
    assert all(0.0 <= g["synthetic_share"] < 1.0 for g in results["growth"])
    assert results["recommended_default"] == "flat"
