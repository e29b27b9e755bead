"""The index package: recall against a NumPy brute-force search, add/remove consistency,
persistence (round trip, mismatch, corruption, interrupted saves), padding, errors, the
factory's dispatch, the shared validation of every backend, thread limits that end with
the call, measurement, and the indexing pipeline with a tiny fake encoder."""

from __future__ import annotations

import json
import sqlite3
from typing import NamedTuple

import faiss
import numpy as np
import pytest

from vs_lib import config
from vs_lib import index as vi
from vs_lib.index import IndexCorruptedError, IndexMismatchError
from vs_lib.index.base import BaseIndex

DIM = 32
N = 4000


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Small arrays: one OpenMP thread avoids spin-waiting on a shared machine."""
    with vi.faiss_threads(1):
        yield


def numpy_topk(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest inner products, by a full NumPy sort (independent of vs_lib)."""
    return np.argsort(-(queries @ database.T), axis=1, kind="stable")[:, :k]


class Clustered(NamedTuple):
    x: np.ndarray  # (N, DIM) stored vectors
    q: np.ndarray  # (100, DIM) queries
    ids: np.ndarray  # (N,) ids of x: not row numbers
    truth: np.ndarray  # (100, 10) ids of the true 10 nearest, by NumPy


@pytest.fixture(scope="module")
def clustered() -> Clustered:
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


@pytest.fixture(scope="module")
def built(clustered):
    x, ids = clustered.x, clustered.ids
    return {
        name: vi.create(DIM, kind, fingerprint="enc-1", **params).add(x, ids)
        for (kind, params, _), name in zip(CASES, IDS, strict=True)
    }


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
def test_persistence_round_trip(case, built, clustered, tmp_path):
    q, ids = clustered.q, clustered.ids
    index = built[IDS[case]]
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == CASES[case][0] and manifest["dim"] == DIM and manifest["metric"] == "ip"
    assert manifest["count"] == N and manifest["fingerprint"] == "enc-1"
    library = {"tree": "scikit-learn", "annoy": "annoy", "scann": "scann"}.get(CASES[case][0], "faiss")
    assert library in manifest["versions"] and all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    loaded = vi.load(tmp_path / "idx", expected_dim=DIM, expected_fingerprint="enc-1")
    assert type(loaded) is type(index) and loaded.kind == index.kind and loaded.fingerprint == "enc-1"
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    s1, i1 = index.search(q, 10)
    s2, i2 = loaded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    # a loaded index keeps accepting updates
    loaded.remove(ids[:10])
    assert len(loaded) == N - 10


def test_mmap_vectors_are_not_counted_in_memory(built, tmp_path):
    index = built[IDS[3]]  # ivfpq with rerank
    index.save(tmp_path / "pq")
    ram = vi.load(tmp_path / "pq")
    mm = vi.load(tmp_path / "pq", mmap_vectors=True)
    assert ram.memory_bytes() - mm.memory_bytes() == N * DIM * 4
    probe = np.eye(DIM, dtype=np.float32)
    np.testing.assert_array_equal(ram.search(probe, 5)[1], mm.search(probe, 5)[1])


def test_memory_reflects_compression(built):
    flat = built["flat"].memory_bytes() / N
    pq = built[IDS[2]].memory_bytes() / N
    assert DIM * 4 <= flat < DIM * 4 + 64  # floats + id bookkeeping
    assert pq < flat / 4  # 8-byte codes + 8-byte ids + centroids


def test_mismatched_dimension_or_fingerprint_refused(built, tmp_path):
    built["flat"].save(tmp_path / "i")
    with pytest.raises(IndexMismatchError, match="dimension 32"):
        vi.load(tmp_path / "i", expected_dim=64)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        vi.load(tmp_path / "i", expected_fingerprint="enc-2")
    with pytest.raises(FileNotFoundError):
        vi.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("name", ["flat", IDS[3], "tree"])
def test_corrupted_file_refused(name, built, tmp_path):
    built[name].save(tmp_path / "i")
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    for info in manifest["files"].values():
        f = tmp_path / "i" / info["name"]
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
        with pytest.raises(IndexCorruptedError, match="checksum"):
            vi.load(tmp_path / "i")
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    vi.load(tmp_path / "i")  # restored bytes load again
    (tmp_path / "i" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError):
        vi.load(tmp_path / "i")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "tree"])
def test_interrupted_save_leaves_previous_index(kind, clustered, tmp_path, monkeypatch):
    x, ids = clustered.x, clustered.ids
    index = vi.create(DIM, kind).add(x[:500], ids[:500])
    index.save(tmp_path / "i")
    index.add(x[500:800], ids[500:800])

    # killed after the new data files are written, before the manifest is replaced
    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(config, "write_json_atomic", boom)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "i")
    monkeypatch.undo()
    old = vi.load(tmp_path / "i")
    assert len(old) == 500 and set(old.ids()) == set(ids[:500])

    # killed while a data file is being written
    real_save = np.save

    def half_write(f, arr, **kw):
        real_save(f, arr[: len(arr) // 2], **kw)
        raise KeyboardInterrupt("killed mid-write")

    real_write = faiss.write_index

    def half_write_faiss(idx, fname):
        real_write(idx, fname)
        with open(fname, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(np, "save", half_write)
    monkeypatch.setattr(faiss, "write_index", half_write_faiss)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "i")
    monkeypatch.undo()
    assert len(vi.load(tmp_path / "i")) == 500

    # a completed save replaces it and cleans up the orphaned data files
    index.save(tmp_path / "i")
    assert len(vi.load(tmp_path / "i")) == 800
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    data_files = {f.name for f in (tmp_path / "i").iterdir() if f.name != "manifest.json"}
    assert data_files == {info["name"] for info in manifest["files"].values()}


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


def test_user_errors_are_clear(clustered):
    x, ids = clustered.x, clustered.ids
    with pytest.raises(ValueError, match=r"at least 64 training vectors"):
        vi.create(DIM, "ivf", nlist=64).add(x[:50], ids[:50])
    with pytest.raises(ValueError, match=r"at least 256 training vectors"):
        vi.create(DIM, "ivfpq", m=8).add(x[:100], ids[:100])
    with pytest.raises(ValueError, match=r"kind must be one of.*annoy.*scann"):
        vi.create(DIM, "no-such-kind")
    with pytest.raises(ValueError, match="unknown parameter"):
        vi.create(DIM, "hnsw", nprobe=3)
    with pytest.raises(ValueError, match="unknown parameter"):
        vi.create(DIM, "tree", nprobe=3)
    with pytest.raises(ValueError, match="tree algorithm"):
        vi.create(DIM, "tree", algorithm="r_tree")
    with pytest.raises(ValueError, match="L2-normalised"):
        vi.create(DIM, "tree").add(x[:5] * 3, ids[:5])
    with pytest.raises(ValueError, match="no search parameters"):
        vi.create(DIM, "tree").set_search_params(nprobe=2)
    with pytest.raises(ValueError, match="unknown search parameter"):
        vi.create(DIM, "flat").set_search_params(ef=2)
    with pytest.raises(ValueError, match="dim must be"):
        vi.create(0, "flat")


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "tree"])
def test_shared_validation_is_the_same_for_every_backend(kind, clustered):
    """The base's checks, with the base's wording, whatever the backend; nothing half-added."""
    x, q, ids = clustered.x, clustered.q, clustered.ids
    params = {"nlist": 4, "m": 8, "nbits": 4} if kind == "ivfpq" else {}
    index = vi.create(DIM, kind, **params).add(x[:300], ids[:300])
    cases = [
        (lambda: index.add(x[:5, :16], ids[300:305]), r"shape \(n, 32\)"),
        (lambda: index.search(np.zeros((2, 31), np.float32), 3), r"shape \(n, 32\)"),
        (lambda: index.add(np.where(np.arange(DIM) == 3, np.nan, x[300:305]), ids[300:305]), "NaN or infinite"),
        (lambda: index.add(x[300:305], ids[300:304]), "does not match"),
        (lambda: index.add(x[300:303], [1, 2, 1]), "duplicates"),
        (lambda: index.add(x[300:302], [-1, 2]), ">= 0"),
        (lambda: index.add(x[300:302], ids[:2]), "already in the index"),
        (lambda: index.remove([5]), "not in the index"),
        (lambda: index.search(q[:1], 0), "k must be"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert len(index) == 300 and (index.ids() == np.sort(ids[:300])).all()  # nothing half-added or removed


class RecordingIndex(BaseIndex):
    """A minimal backend: what it receives shows what the base checked and when it updates."""

    kind = "recording"

    def __init__(self, dim: int, refuse: bool = False):
        super().__init__(dim)
        self.params = {}
        self.refuse, self.calls = refuse, []

    def _add(self, x, ids):
        self.calls.append(("add", x.dtype, x.shape, ids.dtype))
        if self.refuse:
            raise RuntimeError("store unavailable")

    def _remove(self, ids):
        self.calls.append(("remove", ids.tolist()))

    def _search(self, q, k):  # the first stored id, then nothing
        self.calls.append(("search", k))
        ids = np.full((len(q), k), -1, np.int64)
        ids[:, 0] = self._ids[0]
        return np.ones((len(q), k), np.float32), ids

    def set_search_params(self, **params):
        return self

    def memory_bytes(self):
        return 0

    def _write_files(self, folder):
        return {}

    @classmethod
    def from_manifest(cls, path, manifest, options):
        return cls(manifest.dim)


def test_base_validates_before_the_backend_and_updates_after_it():
    idx = RecordingIndex(4)
    with pytest.raises(ValueError):
        idx.add(np.ones((2, 3)), [1, 2])
    assert idx.calls == []  # bad input never reaches the backend
    idx.add(np.ones((2, 4), np.float64), [7, 3])
    assert idx.calls == [("add", np.float32, (2, 4), np.int64)] and idx.ids().tolist() == [3, 7]
    scores, found = idx.search(np.ones(4), 5)  # one vector is one query; k capped at len = 2
    assert idx.calls[-1] == ("search", 2)
    assert found.tolist() == [[3, -1, -1, -1, -1]] and np.isneginf(scores[0, 1:]).all() and scores[0, 0] == 1
    assert idx.remove([7]) == 1 and idx.ids().tolist() == [3] and idx.calls[-1] == ("remove", [7])
    refusing = RecordingIndex(4, refuse=True)
    with pytest.raises(RuntimeError):
        refusing.add(np.ones((1, 4)), [1])
    assert len(refusing) == 0  # the backend refused: the base recorded nothing


def test_factory_dispatches_on_kind_and_on_the_manifest(clustered, tmp_path):
    x, ids = clustered.x, clustered.ids
    made = {kind: vi.create(DIM, kind) for kind in ("flat", "hnsw", "lsh", "tree", "annoy", "scann", "IVF8,Flat")}
    assert {k: type(v).__name__ for k, v in made.items()} == {
        "flat": "FaissIndex", "hnsw": "FaissIndex", "lsh": "FaissIndex", "tree": "TreeIndex",
        "annoy": "AnnoyIndex", "scann": "ScannIndex", "IVF8,Flat": "FaissIndex"
    }  # fmt: skip
    assert all(isinstance(v, vi.VectorIndex) and v.kind == k for k, v in made.items())
    for kind in ("flat", "tree", "annoy", "scann"):
        made[kind].add(x[:50], ids[:50]).save(tmp_path / kind)
        assert type(vi.load(tmp_path / kind)) is type(made[kind])
    # the manifest's kind picks the backend: a flat index's files claimed by the tree backend
    manifest = json.loads((tmp_path / "flat" / "manifest.json").read_text())
    (tmp_path / "flat" / "manifest.json").write_text(json.dumps({**manifest, "kind": "tree"}))
    with pytest.raises(IndexCorruptedError, match="names no ids or vectors"):
        vi.load(tmp_path / "flat")


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


# ---------------------------------------------------------------------- indexing pipeline
@pytest.fixture(scope="module")
def fashion_mnist():
    """The corpus, from local files only (this machine has no internet)."""
    from vs_lib import data

    try:
        return data.load_fashion_mnist(download=False)
    except data.DataNotFoundError as e:
        pytest.skip(f"needs the Fashion-MNIST files (Debian's dataset-fashion-mnist package): {str(e).splitlines()[0]}")


class FakeEncoder:
    """Deterministic stand-in for models.Encoder: mean-pooled 4x4 blocks, L2-normalised."""

    name = "fake"
    dim = 49
    fingerprint = "fake-0001"

    def embed(self, images, batch_size=256):
        out = []
        for im in images:
            im = np.asarray(im, np.float32)
            if im.ndim == 3:
                im = im.mean(axis=2)
            im = im[:28, :28]
            im = np.pad(im, ((0, 28 - im.shape[0]), (0, 28 - im.shape[1])))
            v = im.reshape(7, 4, 7, 4).mean(axis=(1, 3)).ravel() + 1.0
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32).reshape(len(out), self.dim)


def corpus_key(i: int) -> str:
    return f"fashion-mnist/train/{i}" if i < 60000 else f"fashion-mnist/test/{i - 60000}"


def _platform(tmp_path, ids, keys=None):
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, storage_key TEXT NOT NULL, split TEXT)")
    keys = keys or {}
    rows = [(int(i), keys.get(int(i), corpus_key(int(i))), "train" if i < 60000 else "test") for i in ids]
    conn.executemany("INSERT INTO images VALUES (?, ?, ?)", rows)
    conn.commit()
    return conn


def _upload(tmp_path, name, pixels):
    from PIL import Image

    target = tmp_path / "data" / "objects" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target)


def test_sync_index_is_incremental(tmp_path, monkeypatch, fashion_mnist):
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    conn = _platform(tmp_path, list(range(0, 300)) + list(range(60000, 60100)))
    enc = FakeEncoder()
    path = vi.default_index_path(enc.name, "flat")
    assert path == tmp_path / "data" / "index" / "fake-flat"

    first = vi.sync_index(enc, conn, path, progress=False)
    assert first == vi.SyncResult(added=400, removed=0, total=400, path=str(path))
    again = vi.sync_index(enc, conn, path, progress=False)
    assert (again.added, again.removed, again.total) == (0, 0, 400)

    # the stored embedding is the encoder's embedding of the corpus image with that id
    fm = fashion_mnist
    idx = vi.load(path, expected_dim=enc.dim, expected_fingerprint=enc.fingerprint)
    _, top = idx.search(enc.embed(fm.images[[5, 60050]]), 1)
    assert top[:, 0].tolist() == [5, 60050]

    # an upload (object store) and a deletion
    pixels = (np.arange(40 * 30).reshape(40, 30) % 255).astype(np.uint8)
    _upload(tmp_path, "u1.png", pixels)
    conn.execute("INSERT INTO images VALUES (70000, 'u1.png', 'upload')")
    conn.execute("DELETE FROM images WHERE id IN (3, 60001)")
    conn.commit()
    third = vi.sync_index(enc, conn, path, progress=False)
    assert (third.added, third.removed, third.total) == (1, 2, 399)
    idx = vi.load(path)
    assert 70000 in idx and 3 not in idx and 60001 not in idx
    _, top = idx.search(enc.embed([pixels]), 1)
    assert top[0, 0] == 70000

    # a different encoder is refused unless rebuilding
    class Other(FakeEncoder):
        fingerprint = "fake-0002"

    with pytest.raises(IndexMismatchError):
        vi.sync_index(Other(), conn, path, progress=False)
    rebuilt = vi.sync_index(Other(), conn, path, rebuild=True, progress=False)
    assert rebuilt.total == 399 and vi.load(path).fingerprint == "fake-0002"


def test_sync_index_reads_pixels_through_the_storage_key(tmp_path, monkeypatch, fashion_mnist):
    """Which pixels an id has is the row's storage key, whatever the id: a small id may be an
    upload, a large one a corpus image."""

    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    photo = np.random.default_rng(0).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    _upload(tmp_path, "photos/cat.png", photo)
    conn = _platform(tmp_path, [5, 6, 80000], keys={5: "photos/cat.png", 80000: "fashion-mnist/test/7"})
    enc = FakeEncoder()
    res = vi.sync_index(enc, conn, tmp_path / "idx", progress=False)
    assert res.added == 3
    stored = vi.load(tmp_path / "idx").reconstruct([5, 6, 80000])
    fm = fashion_mnist
    np.testing.assert_allclose(stored, enc.embed([photo, fm.train_images[6], fm.test_images[7]]), atol=1e-6)

    # a row whose object file is missing: a clear error, and the saved index is unchanged
    conn.execute("INSERT INTO images VALUES (7, 'photos/gone.png', 'upload')")
    conn.commit()
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        vi.sync_index(enc, conn, tmp_path / "idx", progress=False)
    assert vi.load(tmp_path / "idx").ids().tolist() == [5, 6, 80000]


def test_storage_keys_of_ids(tmp_path):
    from vs_lib import data

    conn = _platform(tmp_path, [4, 9, 2], keys={9: "u/9.png"})
    ids, keys = vi.storage_keys(conn)
    assert ids.tolist() == [2, 4, 9] and keys.tolist() == [corpus_key(2), corpus_key(4), "u/9.png"]
    assert vi.storage_keys(conn, [9, 2])[1].tolist() == ["u/9.png", corpus_key(2)]
    with pytest.raises(data.UnknownImageError, match="3"):
        vi.storage_keys(conn, [2, 3])


def test_sync_index_trains_ivf_on_first_run(tmp_path, monkeypatch, fashion_mnist):
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    conn = _platform(tmp_path, range(600))
    res = vi.sync_index(FakeEncoder(), conn, tmp_path / "ivf", kind="ivf", progress=False, chunk=128)
    assert res.total == 600
    idx = vi.load(tmp_path / "ivf")
    assert idx.kind == "ivf" and idx.is_trained and idx.params["nlist"] == vi.auto_nlist(600)


def test_cli_requires_a_trained_encoder(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    vi.cli_add_arguments(parser)
    args = parser.parse_args(["--model", "nope", "--kind", "hnsw"])
    assert args.kind == "hnsw"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        vi.cli_main(args)


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
