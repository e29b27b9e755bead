"""Contrastive loss, training, protocol metrics, model reuse and the command line."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vs_lib import models, train


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def test_loss_matches_explicit_loop_and_cross_entropy():
    q, c = _unit(6, 5, 0), _unit(9, 5, 1)
    labels = torch.tensor([0, 3, 8, 2, 2, 5])
    t = 0.2
    got = train.contrastive_loss(q, c, t, labels=labels)
    # independent: a Python loop over queries with math.log / math.exp
    total = 0.0
    for i in range(6):
        s = [float(q[i] @ c[j]) / t for j in range(9)]
        total += -(s[labels[i]] - math.log(sum(math.exp(v) for v in s)))
    assert float(got) == pytest.approx(total / 6, rel=1e-5)
    # and torch's cross-entropy over the logits
    ref = F.cross_entropy(q @ c.T / t, labels)
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_masked_loss_drops_masked_candidates():
    q, c = _unit(4, 3, 2), _unit(4, 3, 3)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[0, 2] = True
    mask[2, 2] = True  # the positive itself is never masked
    got = train.contrastive_loss(q, c, 0.5, mask=mask)
    logits = (q @ c.T / 0.5).numpy().astype(np.float64)
    losses = []
    for i in range(4):
        keep = [j for j in range(4) if j == i or not mask[i, j]]
        z = logits[i, keep]
        log_sm = z - np.log(np.exp(z).sum())
        losses.append(-log_sm[keep.index(i)])
    assert float(got) == pytest.approx(np.mean(losses), rel=1e-5)


def test_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        train.contrastive_loss(_unit(2, 3, 0), _unit(2, 3, 1), 0.0)
    with pytest.raises(ValueError, match="expected"):
        train.contrastive_loss(_unit(2, 3, 0), _unit(2, 4, 1))


@pytest.fixture(scope="module")
def tiny_data():
    """Two visually different classes of 28x28 'images' (bright top vs bright bottom)."""
    rng = np.random.default_rng(0)
    n = 192
    labels = np.arange(n) % 2
    imgs = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    imgs[labels == 0, :12] += 150
    imgs[labels == 1, 16:] += 150
    return imgs, labels


def _tiny_cfg(positives="labels", **kw):
    base = dict(positives=positives, arch=dict(widths=[8, 16], fc=[32], dim=16), epochs=4, batch_size=32,
                lr=3e-3, augment=train.LIGHT_AUGMENT, eval_queries=0, checkpoint_seconds=1e9, threads=1)
    base.update(kw)
    return train.TrainConfig(**base)


@pytest.mark.parametrize("positives", ["self_supervised", "labels", "clicks"])
def test_short_training_lowers_loss(tiny_data, positives):
    imgs, labels = tiny_data
    pairs = None
    if positives == "clicks":  # clicks between images of the same class
        rng = np.random.default_rng(1)
        q = rng.integers(0, len(imgs), 400)
        same = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        p = np.array([rng.choice(same[labels[i]]) for i in q])
        pairs = np.stack([q, p], 1)
    cfg = _tiny_cfg(positives, epochs=6, projection_dim=16 if positives == "self_supervised" else None,
                    augment=train.STRONG_AUGMENT if positives == "self_supervised" else train.LIGHT_AUGMENT)
    enc = train.train_encoder(cfg, imgs, labels, click_pairs=pairs, progress=False)
    losses = [h["loss"] for h in enc.metadata["history"]]
    assert len(losses) >= 4
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05
    emb = enc.embed(imgs)
    assert emb.shape == (len(imgs), 16)
    assert enc.metadata["config_key"] == cfg.key()


def test_same_seed_same_embeddings(tiny_data):
    imgs, labels = tiny_data
    a = train.train_encoder(_tiny_cfg(epochs=1), imgs, labels, progress=False)
    b = train.train_encoder(_tiny_cfg(epochs=1), imgs, labels, progress=False)
    c = train.train_encoder(_tiny_cfg(epochs=1, seed=1), imgs, labels, progress=False)
    np.testing.assert_array_equal(a.embed(imgs), b.embed(imgs))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_resume_from_checkpoint(tiny_data, tmp_path):
    imgs, labels = tiny_data
    ck = tmp_path / "m.pt.ckpt"
    cfg = _tiny_cfg(epochs=2, checkpoint_seconds=0.0)  # checkpoint after every step

    stop = {"n": 0}

    def interrupt(rec):
        stop["n"] += 1
        if stop["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_encoder(cfg, imgs, labels, checkpoint=ck, progress=False, callback=interrupt)
    assert ck.exists()
    saved = torch.load(ck, weights_only=False)["state"]["step"]
    enc = train.train_encoder(cfg, imgs, labels, checkpoint=ck, progress=False)
    assert not ck.exists() and saved > 0
    assert enc.metadata["train_steps"] == 2 * (len(imgs) // 32)


def test_ranking_metrics_match_references():
    rng = np.random.default_rng(0)
    G = F.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(0)), dim=1).numpy()
    Q = F.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(1)), dim=1).numpy()
    gl = rng.integers(0, 4, 300)
    ql = rng.integers(0, 4, 40)
    got = train.ranking_metrics(Q, ql, G, gl, k=10, chunk=7)
    # brute force with numpy argsort
    order = np.argsort(-(Q @ G.T), axis=1, kind="stable")
    rel = gl[order] == ql[:, None]
    p1 = rel[:, 0].mean()
    p10 = rel[:, :10].mean()
    ap = []
    for i in range(40):
        R = (gl == ql[i]).sum()
        hits = np.flatnonzero(rel[i, :10])
        ap.append(sum((rel[i, : h + 1].sum() / (h + 1)) for h in hits) / min(10, R))
    assert got["P@1"] == pytest.approx(p1) and got["P@10"] == pytest.approx(p10)
    assert got["mAP@10"] == pytest.approx(np.mean(ap), rel=1e-5)
    # MAP@R against pytorch-metric-learning's AccuracyCalculator
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=("mean_average_precision_at_r", "precision_at_1"), k="max_bin_count",
                              device=torch.device("cpu"))
    ref = calc.get_accuracy(torch.from_numpy(Q), torch.from_numpy(ql), torch.from_numpy(G), torch.from_numpy(gl),
                            ref_includes_query=False)
    assert got["MAP@R"] == pytest.approx(ref["mean_average_precision_at_r"], rel=1e-4)
    assert got["P@1"] == pytest.approx(ref["precision_at_1"])


def test_ensure_model_trains_once_then_reuses(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    imgs, labels = tiny_data
    calls = []
    real_train = train.train_encoder

    def fake_train(cfg, checkpoint=None, progress=True):
        calls.append(cfg.key())
        return real_train(cfg, imgs, labels, checkpoint=checkpoint, progress=False)

    monkeypatch.setattr(train, "train_encoder", fake_train)

    cfg = _tiny_cfg(epochs=1)
    p1 = train.ensure_model("labels", "smoke", cfg=cfg)
    assert p1 == tmp_path / "smoke" / "labels.pt" and p1.exists()
    fp = models.load_encoder(p1).fingerprint
    assert train.ensure_model("labels", "smoke", cfg=cfg) == p1 and len(calls) == 1
    assert models.load_encoder(p1).fingerprint == fp
    cfg2 = _tiny_cfg(epochs=2)  # configuration changed → retrain
    train.ensure_model("labels", "smoke", cfg=cfg2)
    assert len(calls) == 2
    train.ensure_model("labels", "smoke", cfg=cfg2, force=True)
    assert len(calls) == 3
    assert train.model_path("labels", "full") == tmp_path / "labels.pt"
    assert train.model_path("labels", "full", backbone="efficientnet") == tmp_path / "efficientnet_finetuned.pt"
    with pytest.raises(ValueError, match="positives"):
        train.model_path("likes")


def test_config_validation():
    with pytest.raises(ValueError, match="epochs or minutes"):
        train.TrainConfig(positives="labels")
    with pytest.raises(ValueError, match="positives"):
        train.TrainConfig(positives="stars", epochs=1)
    assert train.default_config("labels", "smoke").key() != train.default_config("labels", "full").key()


def test_cli_arguments():
    import argparse

    p = argparse.ArgumentParser()
    train.cli_add_arguments(p)
    a = p.parse_args(["--positives", "clicks", "--minutes", "2", "--profile", "smoke"])
    assert a.positives == "clicks" and a.minutes == 2 and a.epochs is None
    with pytest.raises(SystemExit):
        p.parse_args(["--positives", "clicks", "--minutes", "2", "--epochs", "1"])


def test_both_views_loss_matches_explicit_nt_xent():
    a, b = _unit(3, 4, 5), _unit(3, 4, 6)
    t = 0.3
    got = train.both_views_loss(a, b, t)
    z = torch.cat([a, b]).numpy().astype(np.float64)
    total = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        s = {j: z[i] @ z[j] / t for j in range(6) if j != i}
        total += -(s[pos] - np.log(sum(np.exp(v) for v in s.values())))
    assert float(got) == pytest.approx(total / 6, rel=1e-5)


def test_epochs_and_minutes_whichever_first(tiny_data):
    imgs, labels = tiny_data
    enc = train.train_encoder(_tiny_cfg(epochs=50, minutes=0.02), imgs, labels, progress=False)
    assert enc.metadata["train_seconds"] < 5 and enc.metadata["epochs"] < 50


def test_mine_neighbours_matches_sklearn_brute_force():
    from sklearn.neighbors import NearestNeighbors

    E = _unit(500, 12, 3).numpy()
    got = train.mine_neighbours(E, k=4, chunk=64)  # several chunks, self excluded
    nn = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(E)
    ref = nn.kneighbors(E, return_distance=False)
    assert (got != np.arange(500)[:, None]).all()
    # sklearn lists the point itself first; ties are measure-zero with random vectors
    np.testing.assert_array_equal(got, ref[:, 1:])
    with pytest.raises(ValueError, match="k must be"):
        train.mine_neighbours(E, k=500)


def test_neighbour_positives_come_from_the_mined_lists_and_mask_duplicates(tiny_data):
    imgs, labels = tiny_data
    cfg = _tiny_cfg("self_supervised", neighbours="pixels", neighbour_k=3, neighbour_prob=0.5,
                    negatives="both_views", projection_dim=16)
    sampler = train._PairSampler(cfg, labels, len(imgs), np.random.default_rng(0))
    sampler.neighbours = train.mine_neighbours(_unit(len(imgs), 8, 5).numpy(), 3)
    n_neighbour = 0
    for q, p, mask in sampler.epoch():
        own = p == q
        assert all(p[i] in sampler.neighbours[q[i]] for i in np.flatnonzero(~own))
        n_neighbour += int((~own).sum())
        ids = np.concatenate([q, p])
        assert mask.shape == (2 * len(q), 2 * len(q))
        np.testing.assert_array_equal(mask.numpy(), ids[:, None] == ids[None, :])
    assert 0.3 < n_neighbour / (len(imgs) // 32 * 32) < 0.7  # about neighbour_prob of the pairs
    with pytest.raises(ValueError, match="self_supervised option"):
        _tiny_cfg("labels", neighbours="pixels")


def test_neighbour_features_sources(tiny_data):
    imgs, labels = tiny_data
    pixels = train.neighbour_features(imgs, "pixels")
    both = train.neighbour_features(imgs, "hog_pixels")
    assert len(pixels) == len(both) == len(imgs) and both.shape[1] == pixels.shape[1] + 64
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, rtol=1e-5)
    # half of each row is the (unit) pixel part, half the (unit) HOG part
    np.testing.assert_allclose(np.linalg.norm(both[:, :pixels.shape[1]], axis=1), np.sqrt(0.5), rtol=1e-4)
    nb = train.mine_neighbours(both, 3)
    assert (labels[nb] == labels[:, None]).mean() > 0.95
    with pytest.raises(ValueError, match="source"):
        train.neighbour_features(imgs, "labels")
    with pytest.raises(ValueError, match="neighbours"):
        _tiny_cfg("self_supervised", neighbours="clicks")


def test_training_with_neighbour_positives(tiny_data):
    imgs, labels = tiny_data
    cfg = _tiny_cfg("self_supervised", epochs=4, projection_dim=16, augment=train.STRONG_AUGMENT,
                    negatives="both_views", neighbours="pixels", neighbour_k=3)
    enc = train.train_encoder(cfg, imgs, labels, progress=False)
    losses = [h["loss"] for h in enc.metadata["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    mining = enc.metadata["neighbour_mining"]
    assert mining["source"] == "pixels" and mining["k"] == 3 and 0 < mining["seconds"] <= enc.metadata["train_seconds"]
    # the two tiny classes are far apart in pixels: the mined neighbours share the class
    assert mining["same_class"] > 0.95
    plain = train.train_encoder(_tiny_cfg("self_supervised", epochs=1, projection_dim=16), imgs, labels, progress=False)
    assert plain.metadata["neighbour_mining"] == {}
