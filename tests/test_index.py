"""VectorIndex: recall against a NumPy brute-force search, add/remove consistency,
persistence (round trip, mismatch, corruption, interrupted saves), padding, errors,
and the incremental indexing pipeline with a tiny fake encoder."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from vs_lib import index as vi
from vs_lib.index import IndexCorruptedError, IndexMismatchError, VectorIndex

DIM = 32
N = 4000


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Small arrays: one OpenMP thread avoids spin-waiting on a shared machine."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def clustered():
    """Clustered unit vectors, queries drawn from the same clusters, ids that are not row numbers."""
    x = vi.clustered_vectors(N, DIM, n_clusters=40, spread=0.8, seed=3)
    q = vi.clustered_vectors(100, DIM, n_clusters=40, spread=0.8, seed=3)[::-1].copy()  # same centres
    q = q + np.random.default_rng(5).normal(0, 0.01, q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = np.arange(N, dtype=np.int64) * 7 + 1000
    truth = ids[vi.exact_search(x, q, 10)]  # NumPy matmul, independent of FAISS
    return x, q, ids, truth


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
    ("IVF32,SQ8", {}, 0.8),
    ("HNSW16", {}, 0.85),
]
IDS = [f"{k}{'-' + '-'.join(f'{a}{b}' for a, b in p.items()) if p else ''}" for k, p, _ in CASES]


@pytest.fixture(scope="module")
def built(clustered):
    x, q, ids, truth = clustered
    out = {}
    for (kind, params, _), name in zip(CASES, IDS):
        out[name] = VectorIndex(DIM, kind, fingerprint="enc-1", **params).add(x, ids)
    return out


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_recall_against_exact(case, built, clustered):
    x, q, ids, truth = clustered
    kind, params, floor = CASES[case]
    index = built[IDS[case]]
    scores, found = index.search(q, 10)
    assert scores.shape == found.shape == (len(q), 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert np.isin(found, ids).all()
    assert vi.recall_at_k(found, truth) >= floor
    # best first: similarities never increase along a row
    assert (np.diff(scores, axis=1) <= 1e-5).all()


@pytest.mark.parametrize("kind", ["flat", "tree", "ivfpq-rerank"])
def test_scores_are_inner_products(kind, built, clustered):
    x, q, ids, truth = clustered
    name = {"flat": "flat", "tree": "tree", "ivfpq-rerank": IDS[3]}[kind]
    scores, found = built[name].search(q, 5)
    rows = (found - 1000) // 7
    expected = np.einsum("nd,nkd->nk", q, x[rows])
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_l2_metric_matches_numpy(clustered):
    x, q, ids, _ = clustered
    index = VectorIndex(DIM, "flat", metric="l2").add(x * 2.0, ids)
    scores, found = index.search(q, 5)
    d2 = ((q[:, None, :] - 2.0 * x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, np.sort(d2, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    assert (ids[np.argsort(d2, axis=1)[:, 0]] == found[:, 0]).all()


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_add_remove_search_consistency(case, clustered):
    x, q, ids, _ = clustered
    kind, params, _ = CASES[case]
    n = 1500
    index = VectorIndex(DIM, kind, **params).add(x[:n], ids[:n])
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
    x, q, ids, _ = clustered
    index = built[IDS[case]]
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == CASES[case][0] and manifest["dim"] == DIM and manifest["metric"] == "ip"
    assert manifest["count"] == N and manifest["fingerprint"] == "enc-1"
    assert "faiss" in manifest["versions"] and all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    loaded = VectorIndex.load(tmp_path / "idx", expected_dim=DIM, expected_fingerprint="enc-1")
    assert len(loaded) == len(index) and loaded.kind == index.kind and loaded.fingerprint == "enc-1"
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
    ram = VectorIndex.load(tmp_path / "pq")
    mm = VectorIndex.load(tmp_path / "pq", mmap_vectors=True)
    assert ram.memory_bytes() - mm.memory_bytes() == N * DIM * 4
    probe = np.eye(DIM, dtype=np.float32)
    np.testing.assert_array_equal(ram.search(probe, 5)[1], mm.search(probe, 5)[1])


def test_memory_reflects_compression(built):
    flat = built["flat"].memory_bytes() / N
    pq = built[IDS[2]].memory_bytes() / N
    assert DIM * 4 <= flat < DIM * 4 + 64          # floats + id bookkeeping
    assert pq < flat / 4                            # 8-byte codes + 8-byte ids + centroids


def test_mismatched_dimension_or_fingerprint_refused(built, tmp_path):
    built["flat"].save(tmp_path / "i")
    with pytest.raises(IndexMismatchError, match="dimension 32"):
        VectorIndex.load(tmp_path / "i", expected_dim=64)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        VectorIndex.load(tmp_path / "i", expected_fingerprint="enc-2")
    with pytest.raises(FileNotFoundError):
        VectorIndex.load(tmp_path / "nothing-here")


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
            VectorIndex.load(tmp_path / "i")
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    VectorIndex.load(tmp_path / "i")  # restored bytes load again
    (tmp_path / "i" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError):
        VectorIndex.load(tmp_path / "i")


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_interrupted_save_leaves_previous_index(kind, clustered, tmp_path, monkeypatch):
    x, q, ids, _ = clustered
    index = VectorIndex(DIM, kind).add(x[:500], ids[:500])
    index.save(tmp_path / "i")
    index.add(x[500:800], ids[500:800])

    # killed after the new data file is written, before the manifest is replaced
    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(vi, "_write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "i")
    monkeypatch.undo()
    old = VectorIndex.load(tmp_path / "i")
    assert len(old) == 500 and set(old.ids()) == set(ids[:500])

    # killed while FAISS is writing the data file
    import faiss

    real_write = faiss.write_index

    def half_write(idx, fname):
        real_write(idx, fname)
        with open(fname, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(faiss, "write_index", half_write)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "i")
    monkeypatch.undo()
    assert len(VectorIndex.load(tmp_path / "i")) == 500

    # a completed save replaces it and cleans up the orphaned data files
    index.save(tmp_path / "i")
    assert len(VectorIndex.load(tmp_path / "i")) == 800
    data_files = [f for f in (tmp_path / "i").iterdir() if f.name != "manifest.json"]
    assert len(data_files) == 1


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_k_larger_than_index_and_empty_index(case, clustered):
    x, q, ids, _ = clustered
    kind, params, _ = CASES[case]
    empty = VectorIndex(DIM, kind, **params)
    assert len(empty) == 0 and empty.ids().size == 0
    scores, found = empty.search(q[:3], 4)
    assert (found == -1).all() and np.isneginf(scores).all()
    index = VectorIndex(DIM, kind, **params).add(x[:400], ids[:400])
    index.remove(ids[:395])
    scores, found = index.search(q[:3], 10)
    assert found.shape == (3, 10)
    assert (found[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    real = found[:, :5]
    assert (np.sort(real[real >= 0]) >= ids[395]).all()


def test_user_errors_are_clear(clustered):
    x, q, ids, _ = clustered
    with pytest.raises(ValueError, match=r"at least 64 training vectors"):
        VectorIndex(DIM, "ivf", nlist=64).add(x[:50], ids[:50])
    with pytest.raises(ValueError, match=r"at least 256 training vectors"):
        VectorIndex(DIM, "ivfpq", m=8).add(x[:100], ids[:100])
    index = VectorIndex(DIM, "flat")
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.add(x[:5, :16], ids[:5])
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.search(np.zeros((2, 31), np.float32), 3)
    bad = x[:5].copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(bad, ids[:5])
    with pytest.raises(ValueError, match="does not match"):
        index.add(x[:5], ids[:4])
    with pytest.raises(ValueError, match="duplicates"):
        index.add(x[:3], [1, 2, 1])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(x[:2], [-1, 2])
    with pytest.raises(ValueError, match="k must be"):
        index.search(q[:1], 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        VectorIndex(DIM, "no-such-kind")
    with pytest.raises(ValueError, match="unknown parameter"):
        VectorIndex(DIM, "hnsw", nprobe=3)
    with pytest.raises(ValueError, match="L2-normalised"):
        VectorIndex(DIM, "tree").add(x[:5] * 3, ids[:5])
    assert len(index) == 0  # nothing half-added


def test_search_params_change_recall(built, clustered):
    x, q, ids, truth = clustered
    ivf = built[IDS[1]]
    ivf.set_search_params(nprobe=1)
    low = vi.recall_at_k(ivf.search(q, 10)[1], truth)
    ivf.set_search_params(nprobe=32)
    full = vi.recall_at_k(ivf.search(q, 10)[1], truth)
    ivf.set_search_params(nprobe=8)
    assert full >= 0.999 and low < full
    with pytest.raises(ValueError):
        built["flat"].set_search_params(ef_search=10)


# ---------------------------------------------------------------------- indexing pipeline
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


def _platform(tmp_path, ids):
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, storage_key TEXT NOT NULL, split TEXT)")
    rows = [(int(i), f"fashion-mnist/{'train' if i < 60000 else 'test'}/{i if i < 60000 else i - 60000}",
             "train" if i < 60000 else "test") for i in ids]
    conn.executemany("INSERT INTO images VALUES (?, ?, ?)", rows)
    conn.commit()
    return conn


def test_sync_index_is_incremental(tmp_path, monkeypatch):
    from PIL import Image

    from vs_lib import data

    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    corpus = list(range(0, 300)) + list(range(60000, 60100))
    conn = _platform(tmp_path, corpus)
    enc = FakeEncoder()
    path = vi.default_index_path(enc.name, "flat")
    assert path == tmp_path / "data" / "index" / "fake-flat"

    first = vi.sync_index(enc, conn, path, progress=False)
    assert (first["added"], first["removed"], first["total"]) == (400, 0, 400)
    again = vi.sync_index(enc, conn, path, progress=False)
    assert (again["added"], again["removed"], again["total"]) == (0, 0, 400)

    # the stored embedding is the encoder's embedding of the corpus image with that id
    fm = data.load_fashion_mnist()
    idx = VectorIndex.load(path, expected_dim=enc.dim, expected_fingerprint=enc.fingerprint)
    _, top = idx.search(enc.embed(fm.images[[5, 60050]]), 1)
    assert top[:, 0].tolist() == [5, 60050]

    # an upload (object store) and a deletion
    objects = tmp_path / "data" / "objects"
    objects.mkdir(parents=True)
    pixels = (np.arange(40 * 30).reshape(40, 30) % 255).astype(np.uint8)
    Image.fromarray(pixels).save(objects / "u1.png")
    conn.execute("INSERT INTO images VALUES (70000, 'u1.png', 'upload')")
    conn.execute("DELETE FROM images WHERE id IN (3, 60001)")
    conn.commit()
    third = vi.sync_index(enc, conn, path, progress=False)
    assert (third["added"], third["removed"], third["total"]) == (1, 2, 399)
    idx = VectorIndex.load(path)
    assert 70000 in idx and 3 not in idx and 60001 not in idx
    _, top = idx.search(enc.embed([pixels]), 1)
    assert top[0, 0] == 70000

    # a different encoder is refused unless rebuilding
    class Other(FakeEncoder):
        fingerprint = "fake-0002"

    with pytest.raises(IndexMismatchError):
        vi.sync_index(Other(), conn, path, progress=False)
    rebuilt = vi.sync_index(Other(), conn, path, rebuild=True, progress=False)
    assert rebuilt["total"] == 399 and VectorIndex.load(path).fingerprint == "fake-0002"


def test_sync_index_trains_ivf_on_first_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    conn = _platform(tmp_path, range(600))
    res = vi.sync_index(FakeEncoder(), conn, tmp_path / "ivf", kind="ivf", progress=False, chunk=128)
    assert res["total"] == 600
    idx = VectorIndex.load(tmp_path / "ivf")
    assert idx.kind == "ivf" and idx.is_trained and idx.params["nlist"] == vi.auto_nlist(600)


def test_cli_requires_a_trained_encoder(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    vi.cli_add_arguments(parser)
    args = parser.parse_args(["--model", "nope", "--kind", "hnsw"])
    assert args.kind == "hnsw"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        vi.cli_main(args)


def test_measure_search_reports_recall_and_throughput(built, clustered):
    x, q, ids, truth = clustered
    m = vi.measure_search(built[IDS[1]], q, truth, k=10, single_budget=0.05)
    assert m["recall"] == pytest.approx(vi.recall_at_k(built[IDS[1]].search(q, 10)[1], truth))
    assert m["batch_qps"] > 0 and m["single_qps"] > 0
    assert m["ms_per_query"] == pytest.approx(1000 / m["single_qps"])
    assert vi.recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3, 1]])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ["flat", "hnsw-M16-ef_search64", "tree", IDS[3]])
def test_reconstruct_returns_stored_vectors(name, built, clustered):
    x, q, ids, _ = clustered
    pick = ids[[5, 0, 77]]
    np.testing.assert_allclose(built[name].reconstruct(pick), x[[5, 0, 77]], atol=1e-6)
    with pytest.raises(KeyError):
        built[name].reconstruct([3])


def test_reconstruct_refused_for_code_only_indexes(built):
    with pytest.raises(vi.VectorIndexError, match="no exact float vectors"):
        built[IDS[2]].reconstruct([1000])
