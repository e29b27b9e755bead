"""scale: binary codes against NumPy bit counts, recall bounds under Hamming ties, the
growth measurement's exact ground truth, per-vector byte costs, the capacity arithmetic,
Parquet round trips, and (marked ``ray``) the Ray Data job against in-process embedding."""
from __future__ import annotations

import argparse
import math
import sqlite3

import numpy as np
import pytest

from vs_lib import index as vi
from vs_lib import scale


@pytest.fixture(scope="module")
def vectors():
    x = vi.clustered_vectors(3000, 64, n_clusters=30, spread=0.9, seed=1)
    q = vi.clustered_vectors(60, 64, n_clusters=30, spread=0.9, seed=1)[::-1].copy()
    q += np.random.default_rng(2).normal(0, 0.05, q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


# ---------------------------------------------------------------------- binary codes
def test_binarize_packs_sign_bits():
    x = np.array([[0.5, -1.0, 0.0, 2.0, -0.1, 0.3, 0.0, 1.0, 9.0]], np.float32)
    codes = scale.binarize(x)
    assert codes.shape == (1, 2) and codes.dtype == np.uint8
    # bits, most significant first: 1 0 0 1 0 1 0 1 | 1 0000000
    assert codes[0, 0] == 0b10010101 and codes[0, 1] == 0b10000000
    with pytest.raises(ValueError):
        scale.binarize(np.zeros(8))


def test_hamming_distances_match_bit_by_bit_count(vectors):
    x, q = vectors
    codes, qc = scale.binarize(x[:500]), scale.binarize(q)
    d = scale.hamming_distances(qc, codes)
    bits_q, bits_x = (q > 0), (x[:500] > 0)                     # unpacked booleans, no bit tricks
    expected = (bits_q[:, None, :] != bits_x[None, :, :]).sum(-1)
    np.testing.assert_array_equal(d, expected)
    # FAISS's binary flat index returns the same distances, sorted
    import faiss

    idx = scale.binary_index(codes, "flat")
    D, I = idx.search(qc, 10)
    np.testing.assert_array_equal(D, np.sort(expected, axis=1)[:, :10])
    np.testing.assert_array_equal(np.take_along_axis(expected, I, 1), D)
    assert isinstance(idx, faiss.IndexBinaryFlat)


def test_binary_recall_is_computed_correctly(vectors):
    """Recall of the FAISS binary search equals the fraction of true float neighbours among
    the returned ids; with Hamming ties it must lie between the tie-aware NumPy bounds."""
    x, q = vectors
    k = 10
    truth = vi.exact_search(x, q, k)
    row = scale.binary_recall(x, q, k, kinds=("flat",), truth=truth)[0]
    d = scale.hamming_distances(scale.binarize(q), scale.binarize(x))
    kth = np.sort(d, axis=1)[:, k - 1 : k]
    d_true = np.take_along_axis(d, truth, 1)
    lower = (d_true < kth).sum(1) / k                  # surely in any Hamming top-k
    upper = np.minimum((d_true <= kth).sum(1), k) / k  # possibly in it (ties at the k-th distance)
    assert lower.mean() - 1e-9 <= row["recall"] <= upper.mean() + 1e-9
    # and it is the plain overlap, recomputed here
    _, found = scale.binary_index(scale.binarize(x)).search(scale.binarize(q), k)
    overlap = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
    assert row["recall"] == pytest.approx(overlap)
    assert row["code_bytes_per_vector"] == 8 and 8 <= row["index_bytes_per_vector"] < 9
    assert 0.2 < row["recall"] < 1.0  # 64 sign bits lose information, but far from random


def test_binary_ivf_hnsw_and_rerank(vectors):
    x, q = vectors
    x = x[:1500]
    rows = {r["kind"]: r for r in scale.binary_recall(x, q, 10, kinds=("flat", "ivf", "hnsw"), rerank=10)}
    assert set(rows) >= {"binary-flat", "binary-ivf", "binary-hnsw", "binary-flat+rerank10"}
    assert rows["binary-flat+rerank10"]["recall"] > rows["binary-flat"]["recall"]
    assert rows["binary-ivf"]["recall"] <= rows["binary-flat"]["recall"] + 0.05
    with pytest.raises(ValueError, match="binary index kind"):
        scale.binary_index(scale.binarize(x[:10]), "lsh")


# ---------------------------------------------------------------------- growth and capacity
def test_synthetic_stream_is_chunked_and_deterministic():
    chunks = list(scale.synthetic_stream(2500, 16, n_clusters=5, chunk=1000, seed=4))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    again = np.concatenate(list(scale.synthetic_stream(2500, 16, n_clusters=5, chunk=1000, seed=4)))
    np.testing.assert_array_equal(np.concatenate(chunks), again)
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1, atol=1e-5)


def test_growth_ground_truth_is_exact():
    """Grown with an exact ``Flat`` index, recall must be 1: the streamed top-k equals FAISS."""
    rows = scale.measure_growth([700, 2000, 3000], dim=16, factory="Flat", train_size=500, n_queries=30,
                                chunk=1000, n_clusters=20, progress=False)
    assert [r["N"] for r in rows] == [700, 2000, 3000]
    assert all(r["recall"] == 1.0 and r["synthetic"] for r in rows)
    assert rows[-1]["bytes_per_vector"] == pytest.approx(16 * 4, rel=0.02)
    # and the streamed ground truth agrees with a one-shot NumPy search
    x = np.concatenate(list(scale.synthetic_stream(3000, 16, n_clusters=20, chunk=1000, seed=0)))
    q = scale.synthetic_queries(30, 16, n_clusters=20, seed=0)
    s, i = np.full((30, 0), -np.inf, np.float32), np.zeros((30, 0), np.int64)
    for off in range(0, 3000, 700):
        s, i = scale._merge_topk(s, i, q @ x[off:off + 700].T, off, 10)
    np.testing.assert_array_equal(i, vi.exact_search(x, q, 10))


def test_growth_compressed_index():
    rows = scale.measure_growth([3000, 6000], dim=32, factory="IVF16,PQ8x4", train_size=2000, n_queries=50,
                                nprobe=4, chunk=2500, n_clusters=20, progress=False)
    assert rows[1]["bytes"] > rows[0]["bytes"] and rows[1]["build_seconds"] >= rows[0]["build_seconds"]
    assert 0.1 < rows[1]["recall"] <= 1.0
    assert rows[1]["bytes_per_vector"] < 32 * 4 / 2  # 4-byte codes + 8-byte ids + codebooks


def test_fit_loglog_recovers_exponent():
    n = np.array([1e4, 1e5, 1e6, 1e7])
    fit = scale.fit_loglog(n, 3.0 * n**0.5)
    assert fit["slope"] == pytest.approx(0.5) and fit["a"] == pytest.approx(3.0) and fit["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        scale.fit_loglog([1.0], [2.0])


def test_measure_bytes_per_vector(vectors):
    x, _ = vectors
    got = scale.measure_bytes_per_vector(x, {"float32": "Flat", "float16": "SQfp16", "SQ8": "SQ8", "PQ8x4": "PQ8x4", "binary": None})
    d = x.shape[1]
    assert got["float32"]["bytes_per_vector"] == pytest.approx(4 * d)
    assert got["float16"]["bytes_per_vector"] == pytest.approx(2 * d)
    assert got["SQ8"]["bytes_per_vector"] == pytest.approx(d)
    assert got["PQ8x4"]["bytes_per_vector"] == pytest.approx(4)  # 8 sub-quantizers x 4 bits
    assert got["binary"]["bytes_per_vector"] == pytest.approx(d / 8)
    assert got["float32"]["recall"] == 1.0 and got["PQ8x4"]["recall"] < got["SQ8"]["recall"]


def test_capacity_plan_arithmetic():
    rows = scale.capacity_plan(100e9, {"PQ16": 16.0}, id_bytes=8, ram_per_machine_gb=100, usable_fraction=0.5,
                               qps_at=lambda n: 1e9 / n, peak_qps=10_000, cores_per_machine=10, min_replicas=2,
                               embed_images_per_core_second=1000, embed_cores=10)
    r = rows[0]
    assert r["total_tb"] == pytest.approx(2.4)                   # 100e9 * 24 B
    assert r["shards"] == 48                                     # 2.4e12 / 50e9
    per_shard_qps = 1e9 / (100e9 / 48) * 10                      # 4.8 q/s per shard
    assert r["qps_per_shard"] == pytest.approx(per_shard_qps)
    assert r["replicas"] == math.ceil(10_000 / per_shard_qps) and r["machines"] == 48 * r["replicas"]
    assert r["embed_core_hours"] == pytest.approx(100e9 / 1000 / 3600)
    assert r["embed_days_on_1000_machines"] == pytest.approx(100e9 / 1000 / 3600 / 10_000 / 24)


# ---------------------------------------------------------------------- embedding
def test_parquet_round_trip(tmp_path):
    ids = np.array([5, 2, 9], np.int64)
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    scale.write_embeddings(tmp_path / "e.parquet", ids, emb)
    i2, e2 = scale.read_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(i2, [2, 5, 9])
    np.testing.assert_array_equal(e2, emb[[1, 0, 2]])
    with pytest.raises(ValueError, match="n = len"):
        scale.write_embeddings(tmp_path / "bad.parquet", ids, emb[:2])
    with pytest.raises(FileNotFoundError, match="vs_lib embed"):
        scale.read_embeddings(tmp_path / "none.parquet")


def _upload_platform(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VS_DB", str(tmp_path / "db.sqlite"))
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, storage_key TEXT NOT NULL)")
    conn.executemany("INSERT INTO images VALUES (?, ?)", [(3, "fashion-mnist/train/3"), (70000, "u.png")])
    conn.commit()
    conn.close()
    (tmp_path / "data" / "objects").mkdir(parents=True)
    pixels = (np.arange(40 * 30).reshape(40, 30) % 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "data" / "objects" / "u.png")
    return pixels


def test_images_by_id_reads_corpus_and_uploads(tmp_path, monkeypatch):
    from vs_lib import data

    pixels = _upload_platform(tmp_path, monkeypatch)
    fm = data.load_fashion_mnist()
    corpus = scale.images_by_id([7, 60001])
    np.testing.assert_array_equal(corpus, fm.images[[7, 60001]])
    mixed = scale.images_by_id([3, 70000])
    np.testing.assert_array_equal(mixed[0], fm.images[3])
    np.testing.assert_array_equal(mixed[1], pixels)
    with pytest.raises(ValueError):
        scale.images_by_id([-1])


@pytest.fixture(scope="module")
def smoke_encoder_path():
    from vs_lib import train

    return train.ensure_model("self_supervised", "smoke", progress=False)


def test_embed_inprocess_equals_encoder(smoke_encoder_path, tmp_path):
    from vs_lib import data, models

    enc = models.load_encoder(smoke_encoder_path)
    ids = np.array([10, 60010, 3, 59999], np.int64)
    res = scale.embed_inprocess(enc, ids, tmp_path / "e.parquet", chunk=3)
    np.testing.assert_allclose(res["embeddings"], enc.embed(data.load_fashion_mnist().images[ids]), atol=1e-5)
    i2, e2 = scale.read_embeddings(tmp_path / "e.parquet", sort=False)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_array_equal(e2, res["embeddings"])


def test_cli_requires_a_trained_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    scale.cli_add_arguments(parser)
    args = parser.parse_args(["--engine", "ray", "--model", "nope"])
    assert args.engine == "ray" and args.address is None
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        scale.cli_main(args)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_equals_inprocess(smoke_encoder_path, tmp_path, monkeypatch):
    """A local Ray Data job (2 actors) over 2,000 corpus images and one upload gives the
    in-process embeddings, ids matched after sorting."""
    _upload_platform(tmp_path, monkeypatch)
    ids = np.concatenate([np.arange(0, 70_000, 35, dtype=np.int64)[::-1], [70000]])
    res = scale.embed_with_ray(smoke_encoder_path, ids, tmp_path / "ray.parquet", num_cpus=2, batch_size=256)
    assert res["n"] == len(ids) and res["num_actors"] == 2
    import ray

    assert not ray.is_initialized()  # shut down cleanly
    got_ids, got = scale.read_embeddings(tmp_path / "ray.parquet")
    ref = scale.embed_inprocess(smoke_encoder_path, ids)
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids, ids[order])
    assert np.allclose(got, ref["embeddings"][order], atol=1e-5)
