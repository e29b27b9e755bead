"""Searching every index kind: recall against a NumPy brute-force search, scores, the L2
metric, add/remove consistency, padding when k exceeds the index, search knobs, thread
limits that end with the call, reconstruction, FAISS's lean search path, the exact
kd-tree's distance counts, and measuring a real index."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from _index_cases import CASES, DIM, IDS, N

from vs_lib import index as vi

pytestmark = pytest.mark.usefixtures("one_faiss_thread")  # fixtures from conftest.py


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_recall_against_exact(case, built, clustered):
    q, ids, truth = clustered.q, clustered.ids, clustered.truth
    floor = CASES[case][2]
    index = built[IDS[case]]
    scores, found = index.search(q, 10)
    assert scores.shape == found.shape == (len(q), 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert np.isin(found, ids).all()
    assert vi.neighbour_recall(found, truth) >= floor
    # best first: similarities never increase along a row
    assert (np.diff(scores, axis=1) <= 1e-5).all()


@pytest.mark.parametrize("kind", ["flat", "tree", "ivfpq-rerank", "annoy", "scann"])
def test_scores_are_inner_products(kind, built, clustered):
    x, q = clustered.x, clustered.q
    name = {"ivfpq-rerank": IDS[3], "annoy": "annoy-n_trees20"}.get(kind, kind)
    scores, found = built[name].search(q, 5)
    rows = (found - 1000) // 7
    expected = np.einsum("nd,nkd->nk", q, x[rows])
    np.testing.assert_allclose(scores, expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["flat", "tree"])
def test_l2_metric_matches_numpy(kind, clustered):
    x, q, ids = clustered.x, clustered.q, clustered.ids
    index = vi.create(DIM, kind, metric="l2").add(x * 2.0, ids)
    scores, found = index.search(q, 5)
    d2 = ((q[:, None, :] - 2.0 * x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, np.sort(d2, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    assert (ids[np.argsort(d2, axis=1)[:, 0]] == found[:, 0]).all()
    empty = vi.create(DIM, kind, metric="l2")
    s, f = empty.search(q[:2], 3)
    assert (f == -1).all() and np.isposinf(s).all()


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_add_remove_search_consistency(case, clustered):
    x, ids = clustered.x, clustered.ids
    kind, params, _ = CASES[case]
    n = 1500
    index = vi.create(DIM, kind, **params).add(x[:n], ids[:n])
    gone = ids[:n:3]
    assert index.remove(gone) == len(gone)
    assert len(index) == n - len(gone)
    assert set(index.ids()) == set(ids[:n]) - set(gone)
    _, found = index.search(x[:n], 5)
    assert not np.isin(found, gone).any()
    # a stored vector finds itself (every kind here should, with these sizes)
    kept_rows = np.setdiff1d(np.arange(n), np.arange(0, n, 3))[:50]
    _, top = index.search(x[kept_rows], 1)
    assert (top[:, 0] == ids[kept_rows]).mean() >= 0.9
    # adding more later works, and the new vectors are found
    index.add(x[n : n + 200], ids[n : n + 200])
    assert len(index) == n - len(gone) + 200
    _, top = index.search(x[n : n + 50], 1)
    assert (top[:, 0] == ids[n : n + 50]).mean() >= 0.9
    with pytest.raises(ValueError, match="already in the index"):
        index.add(x[n : n + 1], ids[n : n + 1])
    with pytest.raises(ValueError, match="not in the index"):
        index.remove(gone[:2])


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_k_larger_than_index_and_empty_index(case, clustered):
    x, q, ids = clustered.x, clustered.q, clustered.ids
    kind, params, _ = CASES[case]
    empty = vi.create(DIM, kind, **params)
    assert len(empty) == 0 and empty.ids().size == 0
    scores, found = empty.search(q[:3], 4)
    assert (found == -1).all() and np.isneginf(scores).all()
    index = vi.create(DIM, kind, **params).add(x[:400], ids[:400])
    index.remove(ids[:395])
    scores, found = index.search(q[:3], 10)
    assert found.shape == (3, 10)
    assert (found[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    real = found[:, :5]
    assert (np.sort(real[real >= 0]) >= ids[395]).all()


def test_search_params_change_recall(built, clustered):
    q, truth = clustered.q, clustered.truth
    ivf = built[IDS[1]]
    ivf.set_search_params(nprobe=1)
    low = vi.neighbour_recall(ivf.search(q, 10)[1], truth)
    ivf.set_search_params(nprobe=32)
    full = vi.neighbour_recall(ivf.search(q, 10)[1], truth)
    ivf.set_search_params(nprobe=8)
    assert full >= 0.999 and low < full
    with pytest.raises(ValueError):
        built["flat"].set_search_params(ef_search=10)


def test_thread_limits_end_with_the_call(built, clustered):
    """Small searches run single-threaded and PQ trains on one thread, but nothing outlives the call."""
    x, q, ids = clustered.x, clustered.q, clustered.ids
    with vi.faiss_threads(2):
        blas_block = faiss.cvar.distance_compute_blas_database_bs
        with vi.faiss_threads(1):
            assert faiss.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == 2
        built["flat"].search(q[:3], 5)  # the single-threaded scan path
        vi.create(DIM, "ivfpq", nlist=4, m=8, nbits=4).add(x[:300], ids[:300])  # single-threaded PQ training
        assert faiss.omp_get_max_threads() == 2
        assert faiss.cvar.distance_compute_blas_database_bs == blas_block


@pytest.mark.parametrize("name", ["flat", "hnsw-M16-ef_search64", "tree", IDS[3]])
def test_reconstruct_returns_stored_vectors(name, built, clustered):
    x, ids = clustered.x, clustered.ids
    pick = ids[[5, 0, 77]]
    np.testing.assert_allclose(built[name].reconstruct(pick), x[[5, 0, 77]], atol=1e-6)
    with pytest.raises(KeyError):
        built[name].reconstruct([3])


def test_reconstruct_refused_for_code_only_indexes(built):
    with pytest.raises(vi.VectorIndexError, match="no exact float vectors"):
        built[IDS[2]].reconstruct([1000])


# ---------------------------------------------------------------------- the FAISS search path
def faiss_own_search(index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's own search of the whole index (its id map translates the labels itself)."""
    return index.faiss_index.search(np.ascontiguousarray(q, np.float32), k)


@pytest.mark.parametrize("kind, params", [("flat", {}), ("hnsw", {"M": 16}), ("ivf", {"nlist": 32, "nprobe": 4}),
                                          ("ivfpq", {"nlist": 16, "m": 8, "nprobe": 4}), ("HNSW8", {}),
                                          ("IVF16,SQ8", {})])  # fmt: skip
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_faiss_search_returns_what_faiss_returns(kind, params, metric, clustered):
    """The lean path (raw search_c, own id table, checks after the search) must give exactly
    FAISS's answers: single queries, batches, float64 or strided input, after a removal (an
    HNSW graph is rebuilt) and after a knob changed."""
    x, q, ids = clustered.x, clustered.q, clustered.ids
    index = vi.create(DIM, kind, metric=metric, **params).add(x[:2000], ids[:2000])
    for queries in (q, q[:1], q[5], q.astype(np.float64), np.asfortranarray(q)):
        s1, i1 = index.search(queries, 10)
        s2, i2 = faiss_own_search(index, np.atleast_2d(queries), 10)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
        assert s1.dtype == np.float32 and i1.dtype == np.int64
    index.remove(ids[:300:3])
    if kind == "hnsw":
        index.set_search_params(ef_search=12)
    s1, i1 = index.search(q, 10)
    np.testing.assert_array_equal(i1, faiss_own_search(index, q, 10)[1])
    assert not np.isin(i1, ids[:300:3]).any()
    for bad in (np.full(DIM, np.nan, np.float32), np.where(np.arange(DIM) == 4, np.inf, q[:3])):
        with pytest.raises(ValueError, match="NaN or infinite"):
            index.search(bad, 5)


def test_faiss_search_pads_when_faiss_finds_fewer(clustered):
    """An IVF probing one near-empty cell returns fewer than k: padding with -1 / +inf."""
    x, q, ids = clustered.x, clustered.q, clustered.ids
    index = vi.create(DIM, "ivf", metric="l2", nlist=64, nprobe=1).add(x[:1000], ids[:1000])
    scores, found = index.search(q, 100)
    assert (found == -1).any() and (np.isposinf(scores) == (found == -1)).all()
    ref = faiss_own_search(index, q, 100)[1]
    np.testing.assert_array_equal(found, ref)


def test_tree_distance_counts(clustered):
    """Counts checked against scikit-learn's own counter on the same tree, and against the
    two cases with known answers: one leaf (every query computes all n distances) and 2-D
    points (a few leaves)."""
    from sklearn.neighbors import KDTree

    x, q, ids = clustered.x, clustered.q, clustered.ids
    one_leaf = vi.create(DIM, "tree", leaf_size=5000).add(x[:800], ids[:800])
    assert (one_leaf.distance_counts(q[:10], 5) == 800).all()
    rng = np.random.default_rng(0)
    flat2 = rng.random((4000, 2)).astype(np.float32)
    tree2 = vi.create(2, "tree", metric="l2").add(flat2, np.arange(4000))
    counts = tree2.distance_counts(flat2[:50] + 0.001, 10)
    assert (counts >= 10).all() and counts.mean() < 0.05 * 4000
    ref = KDTree(flat2, leaf_size=40)
    expected = []
    for v in flat2[:50] + 0.001:
        ref.reset_n_calls()
        ref.query(v[None], k=10)
        expected.append(ref.get_n_calls())
    np.testing.assert_array_equal(counts, expected)
    high = vi.create(DIM, "tree").add(x, ids).distance_counts(q[:20], 10)
    assert high.mean() / N > 5 * counts.mean() / 4000  # in 32-d the exact tree scans a far larger share


def test_measure_search_on_a_real_index(built, clustered):
    q, truth = clustered.q, clustered.truth
    ivf = built[IDS[1]].set_search_params(nprobe=1)
    try:
        m = vi.measure_search(ivf, q, truth, k=10, single_budget=0.01)
        _, found = ivf.search(q, 10)
        overlap = np.mean([len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)]) / 10
        assert m.recall == pytest.approx(overlap) and m.recall < 1.0
    finally:
        ivf.set_search_params(nprobe=8)
