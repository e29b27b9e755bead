"""Offline evaluation against a brute-force re-computation with the scalar metrics."""

import numpy as np
import pandas as pd
import pytest

from vs_lib import evaluate, metrics
from vs_lib.protocols import Encoder


def _normed(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    centres = _normed(rng, 10, 16)
    g_lab = rng.integers(0, 10, 300)
    q_lab = rng.integers(0, 10, 40)
    g = centres[g_lab] + 0.9 * rng.normal(size=(300, 16)).astype(np.float32)
    q = centres[q_lab] + 0.9 * rng.normal(size=(40, 16)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q, q_lab, g, g_lab


def test_metrics_match_brute_force(toy):
    q, ql, g, gl = toy
    k = 8
    ev = evaluate.evaluate_embeddings(q, ql, g, gl, k=k, chunk_size=13)
    sims = q @ g.T
    for i in range(len(q)):
        order = np.argsort(-sims[i], kind="stable")
        full_grades = metrics.FASHION_MNIST_GRADES[ql[i], gl]
        top = order[:k]
        binary = (gl[top] == ql[i]).astype(int)
        n_rel = int((gl == ql[i]).sum())
        row = ev.per_query.iloc[i]
        assert row["n_relevant"] == n_rel
        assert row[f"precision@{k}"] == pytest.approx(metrics.precision_at_k(binary, k))
        assert row[f"recall@{k}"] == pytest.approx(metrics.recall_at_k(binary, k, n_rel))
        assert row[f"rr@{k}"] == pytest.approx(metrics.reciprocal_rank(binary))
        assert row[f"ap@{k}"] == pytest.approx(metrics.average_precision(binary, min(k, n_rel)))
        # nDCG against the whole gallery's grades as the ideal, computed the slow way
        assert row[f"ndcg@{k}"] == pytest.approx(metrics.ndcg_at_k(full_grades[top], k, ideal=full_grades))
        assert row[f"hit@{k}"] == float(binary.any())


def test_query_excluded_from_its_own_results():
    rng = np.random.default_rng(1)
    g = _normed(rng, 50, 8)
    gl = np.arange(50) % 10
    gid = np.arange(100, 150)
    # queries are gallery items 3, 17 and an outsider id 999 (identical vector to item 5)
    q = g[[3, 17, 5]]
    qid = np.array([103, 117, 999])
    ev = evaluate.evaluate_embeddings(q, gl[[3, 17, 5]], g, gl, k=5, query_ids=qid, gallery_ids=gid)
    assert 103 not in ev.result_ids[0] and 117 not in ev.result_ids[1]
    assert ev.result_ids[2, 0] == 105  # not in the gallery: its twin is found first
    assert list(ev.per_query["n_relevant"]) == [4, 4, 5]
    # without ids nothing is excluded: the query finds itself first
    ev2 = evaluate.evaluate_embeddings(q, gl[[3, 17, 5]], g, gl, k=5)
    assert list(ev2.result_ids[:, 0]) == [3, 17, 5]


def test_perfect_embeddings_score_one():
    labels = np.repeat(np.arange(10), 12)
    emb = np.eye(10, dtype=np.float32)[labels]
    ids = np.arange(len(labels))
    ev = evaluate.evaluate_embeddings(emb, labels, emb, labels, k=10, query_ids=ids, gallery_ids=ids)
    s = ev.summary(n_boot=50)
    for name in ("P@10", "MRR@10", "mAP@10", "nDCG@10", "HitRate@10"):
        assert s.loc[name, "mean"] == pytest.approx(1.0)
    assert s.loc["R@10", "mean"] == pytest.approx(10 / 11)


def test_tables(toy):
    q, ql, g, gl = toy
    a = evaluate.evaluate_embeddings(q, ql, g, gl, k=5, name="a")
    rng = np.random.default_rng(3)
    b = evaluate.evaluate_embeddings(_normed(rng, 40, 16), ql, g, gl, k=5, name="random")
    pc = a.per_class()
    assert set(pc.columns) >= {"mAP@5", "nDCG@5", "queries"} and pc["queries"].sum() == 40
    pq = a.per_query
    for cls, row in pc.iterrows():
        assert row["mAP@5"] == pytest.approx(pq.loc[pq.class_name == cls, "ap@5"].mean())
    worst = a.failures(4)
    assert len(worst) == 4 and (worst["ap@5"].to_numpy() <= a.per_query["ap@5"].min() + 1e-12).any()
    assert worst["ap@5"].is_monotonic_increasing and len(worst["result_ids"].iloc[0]) == 5
    table = evaluate.compare([a, b], n_boot=100)
    assert list(table.index) == ["a", "random"]
    assert table.loc["a", ("mAP@5", "mean")] > table.loc["random", ("mAP@5", "mean")]
    assert (table.xs("low", axis=1, level=1) <= table.xs("mean", axis=1, level=1) + 1e-12).all().all()
    assert isinstance(evaluate.format_table(table), pd.DataFrame)
    d = evaluate.paired_difference(b, a, "ap", n_boot=200)
    assert d.difference == pytest.approx(a.per_query["ap@5"].mean() - b.per_query["ap@5"].mean())
    assert (d.a, d.b, d.metric) == ("random", "a", "ap@5")
    conf = a.confusion()
    np.testing.assert_allclose(conf.sum(axis=1)[conf.sum(axis=1) > 0], 1.0)


def test_user_errors():
    rng = np.random.default_rng(0)
    g = _normed(rng, 5, 4)
    with pytest.raises(ValueError, match="one label per embedding"):
        evaluate.evaluate_embeddings(g, [0, 1], g, np.zeros(5, int), k=2)
    with pytest.raises(ValueError, match="larger than"):  # a query in the gallery cannot retrieve itself
        evaluate.evaluate_embeddings(
            g, np.zeros(5, int), g, np.zeros(5, int), k=5, query_ids=np.arange(5), gallery_ids=np.arange(5)
        )
    with pytest.raises(ValueError, match="profile"):
        evaluate.profile_protocol("tiny")


class _FakeEncoder:
    """Centred pixels, L2-normalised: an encoder by the protocol, no torch."""

    name = "fake"
    dim = 784
    fingerprint = "fake-pixels"

    def embed(self, images, batch_size=256):
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
        x = x - x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_evaluate_encoder_on_real_images():
    from vs_lib import data

    ds = data.load_fashion_mnist()
    proto = evaluate.default_protocol(ds, n_queries=200, n_gallery=3000, seed=0)
    assert (proto.query_ids >= 60000).all() and (proto.gallery_ids < 60000).all()
    assert isinstance(_FakeEncoder(), Encoder)
    evs = evaluate.evaluate_systems(proto, {"pixels": _FakeEncoder()}, k=10)
    s = evs["pixels"].summary(n_boot=100)
    # raw pixels already retrieve the same class most of the time on Fashion-MNIST
    assert 0.6 < s.loc["P@10", "mean"] < 0.95
    # the four comparison figures come from the same metric functions: same P@10 and mAP@10
    m = evaluate.protocol_metrics(_FakeEncoder(), proto, k=10)
    assert m.precision_at_k == pytest.approx(s.loc["P@10", "mean"])
    assert m.map_at_k == pytest.approx(s.loc["mAP@10", "mean"])
    assert m.dim == 784 and 0 < m.map_at_r < m.precision_at_1 <= 1
    # notebooks 03 and 06 share this protocol in the smoke profile
    smoke = evaluate.profile_protocol("smoke", ds, seed=0)
    assert (len(smoke.query_ids), len(smoke.gallery_ids)) == (evaluate.SMOKE_QUERIES, evaluate.SMOKE_GALLERY)
    np.testing.assert_array_equal(smoke.gallery_ids, evaluate.profile_protocol("smoke", ds, seed=0).gallery_ids)


def test_cached_embed_reuses_and_keys_on_model_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path))
    calls = []

    class Enc(_FakeEncoder):
        fingerprint = "abc123"

        def embed(self, images, batch_size=256):
            calls.append(len(images))
            return super().embed(images)

    imgs = np.random.default_rng(0).integers(0, 255, (20, 28, 28), dtype=np.uint8)
    a = evaluate.cached_embed(Enc(), imgs)
    b = evaluate.cached_embed(Enc(), imgs)
    np.testing.assert_array_equal(a, b)
    assert calls == [20]
    evaluate.cached_embed(Enc(), imgs[:10])  # other images: another file
    other = Enc()
    other.fingerprint = "def456"
    evaluate.cached_embed(other, imgs)  # other model: another file
    assert calls == [20, 10, 20]
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 3


def _rank_all(Q, G):
    return np.argsort(-(Q @ G.T), axis=1, kind="stable")


def test_ranking_metrics_match_brute_force_and_pytorch_metric_learning():
    rng = np.random.default_rng(0)
    G, Q = _normed(rng, 300, 8), _normed(rng, 40, 8)
    gl, ql = rng.integers(0, 4, 300), rng.integers(0, 4, 40)
    got = evaluate.ranking_metrics(Q, ql, G, gl, k=10, chunk=7)  # several chunks
    # brute force with numpy argsort and the definitions written out
    rel = gl[_rank_all(Q, G)] == ql[:, None]
    ap = []
    for i in range(40):
        R = (gl == ql[i]).sum()
        hits = np.flatnonzero(rel[i, :10])
        ap.append(sum(rel[i, : h + 1].sum() / (h + 1) for h in hits) / min(10, R))
    assert got.precision_at_1 == pytest.approx(rel[:, 0].mean())
    assert got.precision_at_k == pytest.approx(rel[:, :10].mean())
    assert got.map_at_k == pytest.approx(np.mean(ap))
    assert got.as_row() == {
        "P@1": got.precision_at_1,
        "P@10": got.precision_at_k,
        "mAP@10": got.map_at_k,
        "MAP@R": got.map_at_r,
    }
    # MAP@R against pytorch-metric-learning's AccuracyCalculator
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "precision_at_1"), k="max_bin_count", device=torch.device("cpu")
    )
    t = torch.from_numpy
    ref = calc.get_accuracy(t(Q), t(ql), t(G), t(gl), ref_includes_query=False)
    assert got.map_at_r == pytest.approx(ref["mean_average_precision_at_r"], rel=1e-4)
    assert got.precision_at_1 == pytest.approx(ref["precision_at_1"])


def test_perfect_clusters_score_one_on_every_ranking_metric():
    labels = np.repeat(np.arange(5), 8)
    emb = np.eye(5, dtype=np.float32)[labels] + 0.01 * _normed(np.random.default_rng(2), 40, 5)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    m = evaluate.ranking_metrics(emb[::2], labels[::2], emb[1::2], labels[1::2], k=3)
    assert (m.precision_at_1, m.precision_at_k, m.map_at_k, m.map_at_r) == pytest.approx((1, 1, 1, 1))


def test_failure_gallery_draws_the_worst_queries(toy):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vs_lib import viz

    q, ql, g, gl = toy
    ev = evaluate.evaluate_embeddings(q, ql, g, gl, k=4)
    images = np.random.default_rng(0).integers(0, 255, (300, 28, 28), dtype=np.uint8)
    fig = viz.failure_gallery(ev, images, n=3)
    assert len(fig.axes) == 3 * (4 + 1)  # one row per query: the query, then its 4 results
    worst = ev.failures(3)
    titles = [fig.axes[r * 5].get_title() for r in range(3)]
    assert all(f"AP {a:.2f}" in t for a, t in zip(worst["ap@4"], titles, strict=True))
    plt.close(fig)
