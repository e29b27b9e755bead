"""The ann-benchmarks protocol (vs_lib.index.annbench): recall, ground truth, frontier, build
cache and a small sweep, each against a hand computation or an independent library.

No timing assertions: speed is what ``benchmarks/ann.py`` reports, not what a test checks.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from vs_lib.index import annbench as ab
from vs_lib.index.annbench.algorithms import Algorithm


# ---------------------------------------------------------------------- recall
def tie_example():
    """A 2-D query at the origin; distances 1, 2, 2 (a tie), 2.0005, 2.002, 3, 5."""
    train = np.array([[1, 0], [0, 2], [2, 0], [2.0005, 0], [2.002, 0], [3, 0], [5, 0]], np.float32)
    queries = np.zeros((1, 2), np.float32)
    true = np.array([[1.0, 2.0, 2.0, 2.0005, 2.002, 3.0, 5.0]])
    return train, queries, true


@pytest.mark.parametrize(
    "found, k, expected",
    [
        ([[0, 1, 2]], 3, 1.0),  # the true three
        ([[0, 2, 1]], 3, 1.0),  # same, other order
        ([[0, 2]], 2, 1.0),  # the tie at rank 2: either tied point is a hit
        ([[0, 1]], 2, 1.0),
        ([[0, 3]], 2, 1.0),  # 2.0005 <= 2 + 0.001: within epsilon
        ([[0, 4]], 2, 0.5),  # 2.002 > 2 + 0.001
        ([[0, 5, 6]], 3, 1 / 3),
        ([[0, 2, -1]], 3, 2 / 3),  # a missing result never counts
        ([[6, 5, 4]], 3, 0.0),
    ],
)
def test_knn_recall_by_hand(found, k, expected):
    train, queries, true = tie_example()
    assert ab.knn_recall(train, queries, true, np.array(found), k) == pytest.approx(expected)


def test_knn_recall_recomputes_distances_and_differs_from_id_recall():
    """The tie: the truth lists row 1, a library returns row 2 — id recall misses it, k-nn recall does not."""
    train, queries, true = tie_example()
    truth_ids = np.array([[0, 1, 2, 3, 4, 5, 6]])
    assert ab.id_recall(truth_ids, np.array([[0, 2]]), 2) == pytest.approx(0.5)
    assert ab.knn_recall(train, queries, true, np.array([[0, 2]]), 2) == pytest.approx(1.0)
    per_query = ab.knn_recall(np.r_[train, train], np.r_[queries, queries], np.r_[true, true],
                              np.array([[0, 1], [0, 4]]), 2, per_query=True)  # fmt: skip
    np.testing.assert_allclose(per_query, [1.0, 0.5])


# ---------------------------------------------------------------------- ground truth
def integer_task(n=600, q=40, d=12, seed=0) -> ab.Task:
    """Small integer pixels (0..3), like Fashion-MNIST's integers: many exact ties."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 4, (n, d)).astype(np.float32)
    test = rng.integers(0, 4, (q, d)).astype(np.float32)
    return ab.Task("integer-test", train, test, k=10)


def test_ground_truth_matches_sklearn_and_is_cached(tmp_path):
    task = integer_task()
    truth = ab.ground_truth(task, count=30, cache_dir=tmp_path)
    ref_d, _ = NearestNeighbors(n_neighbors=30, algorithm="brute").fit(task.train).kneighbors(task.test)
    np.testing.assert_allclose(truth.distances, ref_d, atol=1e-6)  # same distances at every rank
    direct = np.sqrt(((task.test[:, None, :] - task.train[truth.neighbors]) ** 2).sum(-1))
    np.testing.assert_allclose(truth.distances, direct, atol=1e-6)  # and they are the listed rows'
    assert (np.diff(truth.distances, axis=1) >= 0).all()
    ties = np.diff(truth.distances, axis=1) == 0  # ties ordered by row
    assert (np.diff(truth.neighbors, axis=1)[ties] > 0).all()
    files = list(tmp_path.glob("groundtruth-*.npz"))
    assert len(files) == 1
    again = ab.ground_truth(task, count=30, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.neighbors, truth.neighbors)
    files[0].write_bytes(b"not a numpy file")  # a damaged cache is recomputed, not trusted
    np.testing.assert_array_equal(ab.ground_truth(task, count=30, cache_dir=tmp_path).neighbors, truth.neighbors)


# ---------------------------------------------------------------------- frontier
def test_pareto_frontier_and_best_at_recall_by_hand():
    pts = [
        {"name": "A", "recall": 0.5, "qps": 100.0},
        {"name": "B", "recall": 0.9, "qps": 50.0},
        {"name": "C", "recall": 0.8, "qps": 40.0},  # slower and worse than B
        {"name": "D", "recall": 0.95, "qps": 10.0},
        {"name": "E", "recall": 0.95, "qps": 5.0},  # as good as D, slower
    ]
    assert [p["name"] for p in ab.pareto_frontier(pts)] == ["A", "B", "D"]
    assert ab.best_at_recall(pts, 0.85)["name"] == "B"
    assert ab.best_at_recall(pts, 0.95)["name"] == "D"
    assert ab.best_at_recall(pts, 0.99) is None


# ---------------------------------------------------------------------- build cache
class Counting(Algorithm):
    """A fake library: 'builds' the gallery mean, counts fits, can fail while saving."""

    name = "counting"
    library = "numpy"
    fits = 0
    fail_save = False

    def fit(self, x):
        type(self).fits += 1
        self.centre = x.mean(0)

    def save(self, folder):
        np.save(folder / "centre.npy", self.centre)
        if self.fail_save:
            raise KeyboardInterrupt("killed mid-save")

    def load(self, folder, x):
        self.centre = np.load(folder / "centre.npy")

    def query(self, v, k):
        return np.arange(k)


def test_build_cache_is_atomic_and_keyed_by_parameters(tmp_path):
    x = np.ones((5, 3), np.float32)
    cache = ab.BuildCache(tmp_path)
    Counting.fits = 0
    first = cache.get(Counting({"p": 1}), x, "task")
    assert not first.cached and Counting.fits == 1 and first.index_bytes > 0
    second = cache.get(Counting({"p": 1}), x, "task")
    assert second.cached and Counting.fits == 1 and second.build_seconds == first.build_seconds
    cache.get(Counting({"p": 2}), x, "task")  # other parameters: another build
    cache.get(Counting({"p": 1}), x, "other-task")
    assert Counting.fits == 3
    # a build killed while saving leaves nothing under a real key, and no temporary folder
    Counting.fail_save = True
    try:
        with pytest.raises(KeyboardInterrupt):
            cache.get(Counting({"p": 3}), x, "task")
    finally:
        Counting.fail_save = False
    assert cache.folder(Counting({"p": 3}), "task").exists() is False
    assert not list(tmp_path.glob(".*"))
    # a damaged build is rebuilt
    folder = cache.folder(Counting({"p": 1}), "task")
    (folder / "centre.npy").unlink()
    assert not cache.get(Counting({"p": 1}), x, "task").cached and Counting.fits == 5


# ---------------------------------------------------------------------- a small sweep
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    rng = np.random.default_rng(1)
    centres = rng.integers(0, 255, (20, 32))
    train = np.clip(centres[rng.integers(0, 20, 3000)] + rng.normal(0, 25, (3000, 32)), 0, 255).astype(np.float32)
    test = np.clip(centres[rng.integers(0, 20, 200)] + rng.normal(0, 25, (200, 32)), 0, 255).astype(np.float32)
    task = ab.Task("synthetic-clusters", train, test)
    grid = [
        ab.Entry("bruteforce-numpy", {}, (None,), "exact"),
        ab.Entry("vs_lib", {"kind": "flat"}, (None,), "exact"),
        ab.Entry(
            "vs_lib", {"kind": "hnsw", "M": 8, "ef_construction": 40}, ({"ef_search": 10}, {"ef_search": 80}), "graph"
        ),
        ab.Entry("hnswlib", {"M": 8, "ef_construction": 40}, (10, 80), "graph"),
        ab.Entry("vs_lib", {"kind": "annoy", "n_trees": 5}, ({"search_k": 50}, {"search_k": 2000}), "trees"),
    ]
    report = ab.run_sweep(task, grid, cache_dir=tmp_path_factory.mktemp("ann"), timing_queries=15, anchor_queries=5,
                          rounds=3, build_threads=1, progress=False)  # fmt: skip
    return task, report


def test_sweep_recall_is_the_protocol_recall(sweep):
    """Reported recalls equal k-nn recall recomputed here from the algorithms' own answers."""
    task, report = sweep
    truth = ab.ground_truth(task)
    rows = {(r["algorithm"], json.dumps(r["setting"])): r for r in report.results}
    assert rows[("bruteforce-numpy", "null")]["recall"] == 1.0 and rows[("vs_lib-flat", "null")]["recall"] == 1.0
    import faiss

    raw = faiss.IndexHNSWFlat(32, 8)
    raw.hnsw.efConstruction = 40
    raw.add(task.train)
    raw.hnsw.efSearch = 80
    faiss_recall = ab.knn_recall(task.train, task.test, truth.distances, raw.search(task.test, 10)[1])
    # FAISS's own build at the same parameters gives the same graph, the same recall
    assert rows[("vs_lib-hnsw", '{"ef_search": 80}')]["recall"] == pytest.approx(faiss_recall)
    assert rows[("faiss-hnsw", '{"ef_search": 80}')]["recall"] == pytest.approx(faiss_recall)
    low, high = rows[("annoy", '{"search_k": 50}')]["recall"], rows[("annoy", '{"search_k": 2000}')]["recall"]
    assert low < high and rows[("vs_lib-annoy", '{"search_k": 2000}')]["recall"] == high
    assert all(r["single_equals_batch"] == 1.0 for r in report.results)


def test_sweep_summary_follows_from_the_rows(sweep):
    """QPS are medians of the rounds; the best-at-recall pick, the frontier and the
    hnsw : hnswlib ratio are recomputed here from the per-setting rows."""
    _, report = sweep
    doc = json.loads(report.to_json())  # strict JSON: no NaN anywhere
    for r in doc["results"]:
        assert len(r["qps_rounds"]) == 3 and r["qps"] == pytest.approx(float(np.median(r["qps_rounds"])))
        assert r["ratio_to_bf_cpu"] == pytest.approx(float(np.median(r["ratio_cpu_rounds"])))
    hn = [r for r in doc["results"] if r["algorithm"] == "vs_lib-hnsw"]
    best = max((r for r in hn if r["recall"] >= 0.90), key=lambda r: r["qps_cpu"], default=None)
    got = doc["algorithms"]["vs_lib-hnsw"]["at_recall_cpu"]["0.90"]
    assert (got is None) == (best is None) and (best is None or got["setting"] == best["setting"])
    frontier = doc["algorithms"]["vs_lib-annoy"]["frontier_cpu"]
    assert all(a["recall"] < b["recall"] and a["qps_cpu"] > b["qps_cpu"] for a, b in itertools.pairwise(frontier))
    pair = doc["pairs"]["hnsw_vs_hnswlib"].get("M8-efC40@0.90")
    if pair is not None:
        ours = next(r for r in hn if r["setting"] == pair["ours_setting"])
        peer = next(r for r in doc["results"] if r["algorithm"] == "hnswlib" and r["setting"] == pair["peer_setting"])
        per_round = [a / b for a, b in zip(ours["qps_cpu_rounds"], peer["qps_cpu_rounds"], strict=True)]
        assert pair["ratio_cpu"] == pytest.approx(float(np.median(per_round)))
    assert {b["algorithm"] for b in doc["builds"]} >= {"vs_lib-flat", "vs_lib-hnsw", "hnswlib", "vs_lib-annoy"}


def test_published_figures_and_their_ratios():
    run = ab.PUBLISHED[0]
    assert "April 2025" in run.citation and "read off" in run.citation
    qps, ratio, used = ab.published_qps("scann", 0.95)
    assert used is run and qps == run.qps["scann"][0.95]
    assert ratio == pytest.approx(run.qps["scann"][0.95] / run.qps["hnswlib"][0.95])
    qps, ratio, used = ab.published_qps("annoy", 0.90)  # only in the 2023 run
    assert used is ab.PUBLISHED[1] and ratio == pytest.approx(qps / used.qps["hnswlib"][0.90])
    assert ab.published_qps("usearch", 0.95) == (None, None, None)
    assert all(math.isfinite(v) for r in ab.PUBLISHED for a in r.qps.values() for v in a.values() if v)
