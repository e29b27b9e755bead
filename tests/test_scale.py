"""scale: binary codes against NumPy bit counts, recall bounds under Hamming ties, the
growth measurement's exact ground truth, per-vector byte costs, the capacity arithmetic,
Parquet round trips, pixels through storage keys, and (marked ``ray``) the Ray Data job
against in-process embedding."""

from __future__ import annotations

import argparse
import itertools
import math
import sqlite3
from dataclasses import asdict

import numpy as np
import pytest
import test_index_sync  # tests/ is on sys.path under pytest's default import mode

from vs_lib import index as vi
from vs_lib import scale
from vs_lib.scale import growth

fashion_mnist = test_index_sync.fashion_mnist  # the corpus, or a skip naming what is missing


def numpy_topk(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest inner products, by a full NumPy sort (independent of vs_lib)."""
    return np.argsort(-(queries @ database.T), axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def vectors():
    x = vi.clustered_vectors(3000, 64, n_clusters=30, spread=0.9, seed=1)
    q = vi.synthetic_queries(60, 64, n_clusters=30, spread=0.9, seed=1)
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
    bits_q, bits_x = (q > 0), (x[:500] > 0)  # unpacked booleans, no bit tricks
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
    truth = numpy_topk(q, x, k)
    row = scale.binary_recall(x, q, k, kinds=("flat",), truth=truth)[0]
    d = scale.hamming_distances(scale.binarize(q), scale.binarize(x))
    kth = np.sort(d, axis=1)[:, k - 1 : k]
    d_true = np.take_along_axis(d, truth, 1)
    lower = (d_true < kth).sum(1) / k  # surely in any Hamming top-k
    upper = np.minimum((d_true <= kth).sum(1), k) / k  # possibly in it (ties at the k-th distance)
    assert lower.mean() - 1e-9 <= row.recall <= upper.mean() + 1e-9
    # and it is the plain overlap, recomputed here
    _, found = scale.binary_index(scale.binarize(x)).search(scale.binarize(q), k)
    overlap = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)])
    assert row.recall == pytest.approx(overlap)
    assert row.code_bytes_per_vector == 8 and 8 <= row.index_bytes_per_vector < 9
    assert 0.2 < row.recall < 1.0  # 64 sign bits lose information, but far from random
    # without truth, the exact float top-k is computed
    assert scale.binary_recall(x, q, k, kinds=("flat",))[0].recall == pytest.approx(row.recall)


def test_binary_ivf_hnsw_and_rerank(vectors):
    x, q = vectors
    x = x[:1500]
    rows = {r.kind: r for r in scale.binary_recall(x, q, 10, kinds=("flat", "ivf", "hnsw"), rerank=10)}
    assert set(rows) >= {"binary-flat", "binary-ivf", "binary-hnsw", "binary-flat+rerank10"}
    assert rows["binary-flat+rerank10"].recall > rows["binary-flat"].recall
    assert rows["binary-ivf"].recall <= rows["binary-flat"].recall + 0.05
    # re-ranking the Hamming top 100 by exact inner products, recomputed in NumPy
    truth = numpy_topk(q, x, 10)
    _, cand = scale.binary_index(scale.binarize(x)).search(scale.binarize(q), 100)
    sims = np.einsum("nd,ncd->nc", q, x[cand])
    best = np.take_along_axis(cand, np.argsort(-sims, axis=1)[:, :10], 1)
    expected = np.mean([len(set(b) & set(t)) / 10 for b, t in zip(best, truth, strict=True)])
    assert rows["binary-flat+rerank10"].recall == pytest.approx(expected)
    with pytest.raises(ValueError, match="binary index kind"):
        scale.binary_index(scale.binarize(x[:10]), "lsh")


# ---------------------------------------------------------------------- growth and capacity
def test_running_topk_equals_one_shot_numpy():
    x = vi.clustered_vectors(3000, 16, n_clusters=20, seed=0)
    q = vi.synthetic_queries(30, 16, n_clusters=20, seed=0)
    running = growth._RunningTopK(q, 10)
    bounds = [0, 7, 700, 1400, 2100, 2995, 3000]  # uneven chunks, two of them shorter than k
    for start, end in itertools.pairwise(bounds):
        running.update(x[start:end], start)
    np.testing.assert_array_equal(running.rows, numpy_topk(q, x, 10))


def test_growth_ground_truth_is_exact():
    """Grown with an exact ``Flat`` index, recall must be 1: the streamed top-k equals FAISS."""
    rows = scale.measure_growth(
        [700, 2000, 3000],
        dim=16,
        factory="Flat",
        train_size=500,
        n_queries=30,
        chunk=1000,
        n_clusters=20,
        progress=False,
    )
    assert [r.N for r in rows] == [700, 2000, 3000]
    assert all(r.recall == 1.0 and r.recall_in_top10k == 1.0 and r.synthetic for r in rows)
    assert rows[-1].bytes == 3000 * 16 * 4  # a flat index holds the float32 vectors, nothing else


def test_growth_compressed_index():
    rows = scale.measure_growth(
        [3000, 6000],
        dim=32,
        factory="IVF16,PQ8x4",
        train_size=2000,
        n_queries=50,
        nprobe=4,
        chunk=2500,
        n_clusters=20,
        progress=False,
    )
    assert rows[1].bytes > rows[0].bytes and rows[1].build_seconds >= rows[0].build_seconds
    assert 0.1 < rows[1].recall <= rows[1].recall_in_top10k <= 1.0
    # 4-byte codes + 8-byte ids per vector, plus fixed centroids and codebooks
    assert 12 <= rows[1].bytes_per_vector < 32 * 4 / 2
    assert (rows[1].bytes - rows[0].bytes) / 3000 == pytest.approx(12, rel=0.01)


def test_fit_loglog_recovers_exponent():
    n = np.array([1e4, 1e5, 1e6, 1e7])
    fit = scale.fit_loglog(n, 3.0 * n**0.5)
    assert fit.slope == pytest.approx(0.5) and fit.a == pytest.approx(3.0) and fit.r2 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        scale.fit_loglog([1.0], [2.0])


def test_measure_bytes_per_vector(vectors):
    x, _ = vectors
    got = scale.measure_bytes_per_vector(
        x, {"float32": "Flat", "float16": "SQfp16", "SQ8": "SQ8", "PQ8x4": "PQ8x4", "PQ7": "PQ7", "binary": None}
    )
    d = x.shape[1]
    assert "PQ7" not in got  # 7 sub-quantizers do not divide 64 dimensions
    assert got["float32"].bytes_per_vector == pytest.approx(4 * d)
    assert got["float16"].bytes_per_vector == pytest.approx(2 * d)
    assert got["SQ8"].bytes_per_vector == pytest.approx(d)
    assert got["PQ8x4"].bytes_per_vector == pytest.approx(4)  # 8 sub-quantizers x 4 bits
    assert got["binary"].bytes_per_vector == pytest.approx(d / 8)
    assert got["float32"].recall == 1.0 and got["PQ8x4"].recall < got["SQ8"].recall


def test_capacity_plan_arithmetic():
    rows = scale.capacity_plan(
        100e9,
        {"PQ16": 16.0},
        id_bytes=8,
        ram_per_machine_gb=100,
        usable_fraction=0.5,
        qps_at=lambda n: 1e9 / n,
        peak_qps=10_000,
        cores_per_machine=10,
        min_replicas=2,
        embed_images_per_core_second=1000,
        embed_cores=10,
    )
    r = rows[0]
    assert r.total_tb == pytest.approx(2.4)  # 100e9 * 24 B
    assert r.shards == 48  # 2.4e12 / 50e9
    per_shard_qps = 1e9 / (100e9 / 48) * 10  # 4.8 q/s per shard
    assert r.qps_per_shard == pytest.approx(per_shard_qps)
    assert r.replicas == math.ceil(10_000 / per_shard_qps) and r.machines == 48 * r.replicas
    assert r.embed_core_hours == pytest.approx(100e9 / 1000 / 3600)
    assert r.embed_days_on_1000_machines == pytest.approx(100e9 / 1000 / 3600 / 10_000 / 24)
    bare = asdict(scale.capacity_plan(1e9, {"float32": 512.0})[0])  # JSON-able, load fields left out
    assert bare["shards"] == math.ceil(1e9 * 520 / (256e9 * 0.7)) and bare["machines"] is None


def test_capacity_plan_thread_efficiency_scales_the_shard_speed():
    kw = dict(ram_per_machine_gb=100, usable_fraction=0.5, qps_at=lambda n: 1e9 / n, peak_qps=10_000)
    (full,) = scale.capacity_plan(100e9, {"PQ16": 16.0}, cores_per_machine=10, **kw)
    (half,) = scale.capacity_plan(100e9, {"PQ16": 16.0}, cores_per_machine=10, thread_efficiency=0.5, **kw)
    assert half.qps_per_shard == pytest.approx(full.qps_per_shard / 2)
    assert half.replicas == math.ceil(10_000 / (1e9 / (100e9 / 48) * 10 * 0.5)) > full.replicas
    with pytest.raises(ValueError, match="thread_efficiency"):
        scale.capacity_plan(1e9, {"PQ16": 16.0}, thread_efficiency=0)


# ---------------------------------------------------------------------- rotations before the signs
def _anisotropic(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors whose variance sits on a few axes, as a trained embedding's often does."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.r_[np.full(6, 4.0), np.full(d - 6, 0.4)]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_random_rotation_is_orthogonal_and_makes_bits_estimate_the_angle():
    from vs_lib.scale import binary

    x = _anisotropic(4000)
    f = binary.sign_transform("random", x, seed=3)
    y = f(x)
    # an orthogonal map keeps every inner product (checked on NumPy's Gram matrices)
    np.testing.assert_allclose(y[:50] @ y[:50].T, x[:50] @ x[:50].T, atol=1e-5)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(x), (2, 4000))
    theta = np.arccos(np.clip(np.einsum("nd,nd->n", x[a], x[b]), -1, 1))

    def share(z: np.ndarray) -> np.ndarray:  # differing signs, counted without vs_lib
        return ((z[a] > 0) != (z[b] > 0)).mean(1)

    # random hyperplanes: P(a bit differs) = θ/π, so the mean over pairs matches the mean of θ/π
    assert abs(share(y).mean() - (theta / np.pi).mean()) < 0.01
    # on the data's own axes the estimate is biased: a few axes decide most bits
    assert np.abs(share(x) - theta / np.pi).mean() > 1.5 * np.abs(share(y) - theta / np.pi).mean()
    assert binary.sign_transform("axes", x)(x) is not None
    with pytest.raises(ValueError, match="sign transform"):
        binary.sign_transform("pca", x)


def test_rotations_raise_binary_recall_on_anisotropic_embeddings():
    from vs_lib.scale import binary

    x = _anisotropic(3000, seed=1)
    db, q = x[:2800], x[2800:]
    truth = numpy_topk(q, db, 10)
    recall = {}
    for kind in binary.SIGN_TRANSFORMS:
        (row,) = binary.binary_recall(db, q, 10, truth=truth, transform=binary.sign_transform(kind, db), label=kind)
        assert row.kind == f"binary-flat{kind}"
        # recall recomputed from NumPy Hamming ranks of the same transform's codes
        t = binary.sign_transform(kind, db)
        bits_db, bits_q = t(db) > 0, t(q) > 0
        ham = (bits_q[:, None, :] != bits_db[None, :, :]).sum(-1)
        kth = np.sort(ham, axis=1)[:, 9:10]  # the 10th smallest Hamming distance of each query
        # whatever the tie-break at the 10th distance: everything closer is found, nothing farther
        sure = np.mean([np.isin(tr, np.flatnonzero(h < k_)).mean() for tr, h, k_ in zip(truth, ham, kth, strict=True)])
        maybe = np.mean(
            [np.isin(tr, np.flatnonzero(h <= k_)).mean() for tr, h, k_ in zip(truth, ham, kth, strict=True)]
        )
        assert sure - 1e-9 <= row.recall <= maybe + 1e-9
        recall[kind] = row.recall
    assert recall["random"] > 2 * recall["axes"] and recall["itq"] > 2 * recall["axes"], recall


def test_thread_scaling_reports_each_thread_count():
    rows = growth.measure_thread_scaling(
        3000, dim=32, factory="IVF16,PQ8x4", threads=(1, 2), nprobe=4, train_size=1000, n_queries=100, repeats=1
    )
    assert [r.threads for r in rows] == [1, 2] and all(r.N == 3000 and r.qps > 0 for r in rows)
    assert rows[0].speedup == 1.0 and rows[1].speedup == pytest.approx(rows[1].qps / rows[0].qps)
    assert rows[1].efficiency == pytest.approx(rows[1].speedup / 2)
    with pytest.raises(ValueError):
        growth.measure_thread_scaling(100, threads=(0,))


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


def corpus_key(i: int) -> str:
    return f"fashion-mnist/train/{i}" if i < 60000 else f"fashion-mnist/test/{i - 60000}"


def _platform(tmp_path, monkeypatch, rows: dict[int, str]) -> None:
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VS_DB", str(tmp_path / "db.sqlite"))
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, storage_key TEXT NOT NULL)")
    conn.executemany("INSERT INTO images VALUES (?, ?)", list(rows.items()))
    conn.commit()
    conn.close()


def _upload(tmp_path, name: str, pixels: np.ndarray) -> None:
    from PIL import Image

    target = tmp_path / "data" / "objects" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target)


UPLOAD = (np.arange(40 * 30).reshape(40, 30) % 255).astype(np.uint8)


def test_images_by_id_reads_through_storage_keys(tmp_path, monkeypatch, fashion_mnist):
    from vs_lib import data

    # a small id that is an upload, a large one that is a corpus image: the key decides
    _platform(tmp_path, monkeypatch, {3: corpus_key(3), 7: "u.png", 70000: corpus_key(60001)})
    _upload(tmp_path, "u.png", UPLOAD)
    fm = fashion_mnist
    got = scale.images_by_id([70000, 3, 7])
    np.testing.assert_array_equal(got[0], fm.images[60001])
    np.testing.assert_array_equal(got[1], fm.images[3])
    np.testing.assert_array_equal(got[2], UPLOAD)
    with pytest.raises(data.UnknownImageError, match="60001"):
        scale.images_by_id([60001])  # not in the table


@pytest.fixture(scope="module")
def tiny_encoder_path(tmp_path_factory):
    """An untrained CNN encoder (random weights, fixed seed), saved in a temporary folder."""
    from vs_lib import models

    path = tmp_path_factory.mktemp("encoder") / "tiny.pt"
    models.baseline_encoder("untrained", seed=0, dim=16).save(path)
    return path


def test_embed_inprocess_equals_encoder(tiny_encoder_path, tmp_path, monkeypatch, fashion_mnist):
    from vs_lib import models

    ids = np.array([10, 60010, 3, 59999, 70000], np.int64)
    _platform(tmp_path, monkeypatch, {int(i): corpus_key(int(i)) for i in ids[:-1]} | {70000: "u.png"})
    _upload(tmp_path, "u.png", UPLOAD)
    enc = models.load_encoder(tiny_encoder_path)
    res = scale.embed_inprocess(enc, ids, tmp_path / "e.parquet", chunk=3)
    images = [*fashion_mnist.images[ids[:-1]], UPLOAD]
    np.testing.assert_allclose(res.embeddings, enc.embed(images), atol=1e-5)
    i2, e2 = scale.read_embeddings(tmp_path / "e.parquet", sort=False)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_array_equal(e2, res.embeddings)


def test_cli_requires_a_trained_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    scale.cli_add_arguments(parser)
    args = parser.parse_args(["--engine", "ray", "--model", "nope"])
    assert args.engine == "ray" and args.address is None
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        scale.cli_main(args)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_jobs_equal_inprocess(tiny_encoder_path, tmp_path, monkeypatch, fashion_mnist):
    """Two local Ray Data jobs (2 actors each) on one Ray start: 2,000 corpus images and one
    upload, then a folder of photos (``index --folder DIR --engine ray``).  Each gives the
    in-process result; neither shuts down a Ray it did not start or writes to the environment.
    (A job that starts Ray itself shuts it down: notebook 09 checks that.)"""
    import os

    import ray
    from PIL import Image

    from vs_lib import collection
    from vs_lib.scale import ray_runtime

    ids = np.concatenate([np.arange(0, 70_000, 35, dtype=np.int64)[::-1], [70_000]])
    _platform(tmp_path, monkeypatch, {int(i): corpus_key(int(i)) for i in ids[:-1]} | {70_000: "u.png"})
    _upload(tmp_path, "u.png", UPLOAD)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):  # colour pictures of different sizes, in two folders
        pixels = rng.integers(0, 256, (30 + 3 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("sub" if i % 2 else "") / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image")

    def ours() -> dict[str, str]:  # what the job could write here (Ray itself sets RAY_* variables)
        return {k: v for k, v in os.environ.items() if k.startswith("VS_") or k == "RAY_IGNORE_UNHANDLED_ERRORS"}

    env_before = ours()
    assert ray_runtime.start_ray(2, None)  # this test's Ray, shared by both jobs
    try:
        res = scale.embed_with_ray(tiny_encoder_path, ids, tmp_path / "ray.parquet", num_cpus=2, batch_size=256)
        assert res.n == len(ids) and res.num_actors == 2
        sync = collection.index_folder(folder, name="ray", model=str(tiny_encoder_path), engine="ray", progress=False)
        assert ray.is_initialized()  # the jobs left the Ray they found running
    finally:
        ray.shutdown()
    assert ours() == env_before  # the settings reached the actors without writes to this process's environment
    got_ids, got = scale.read_embeddings(tmp_path / "ray.parquet")
    ref = scale.embed_inprocess(tiny_encoder_path, ids)
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_allclose(got, ref.embeddings[order], atol=1e-5)
    # the folder: same files, content hashes, perceptual hashes and vectors as an in-process sync
    local = collection.index_folder(folder, name="local", model=str(tiny_encoder_path), progress=False)
    assert sync.embedded == local.embedded == 12
    by_ray, in_process = collection.open_state(name="ray"), collection.open_state(name="local")
    assert [(r.path, r.sha256, r.phash) for r in by_ray.records] == [
        (r.path, r.sha256, r.phash) for r in in_process.records
    ]
    assert len({r.path.split("/")[0] for r in in_process.records}) > 1  # both folders were walked
    np.testing.assert_allclose(by_ray.vectors, in_process.vectors, atol=1e-5)
