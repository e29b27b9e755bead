"""Contrastive loss, positive sources, the training loop's steps, model reuse and the command line."""

from __future__ import annotations

import argparse
import itertools
import math
import sqlite3
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vs_lib import models, train
from vs_lib.train import registry


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


# ---- the loss, against independent computations ---------------------------------------------


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
    assert float(got) == pytest.approx(float(F.cross_entropy(q @ c.T / t, labels)), rel=1e-6)


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


def test_symmetric_loss_is_both_directions_of_cross_entropy():
    a, b = _unit(5, 4, 7), _unit(5, 4, 8)
    target = torch.arange(5)
    ref = 0.5 * (F.cross_entropy(a @ b.T / 0.2, target) + F.cross_entropy(b @ a.T / 0.2, target))
    assert float(train.symmetric_loss(a, b, 0.2)) == pytest.approx(float(ref), rel=1e-6)
    assert float(train.pair_loss(a, b, 0.2, "batch")) == pytest.approx(float(ref), rel=1e-6)
    # a (2n, 2n) mask over cat([a, b]) uses its query-positive blocks
    big = torch.zeros(10, 10, dtype=torch.bool)
    big[0, 5 + 1] = big[5 + 1, 0] = True  # a[0] and b[1] are the same image
    small = big[:5, 5:]
    torch.testing.assert_close(train.symmetric_loss(a, b, 0.2, big), train.symmetric_loss(a, b, 0.2, small))
    assert float(train.symmetric_loss(a, b, 0.2, small)) != pytest.approx(float(ref))


def test_both_views_loss_matches_pytorch_metric_learning_nt_xent():
    from pytorch_metric_learning.losses import NTXentLoss

    a, b = _unit(6, 4, 5), _unit(6, 4, 6)
    ref = NTXentLoss(temperature=0.3)(torch.cat([a, b]), torch.cat([torch.arange(6), torch.arange(6)]))
    assert float(train.both_views_loss(a, b, 0.3)) == pytest.approx(float(ref), rel=1e-5)
    assert float(train.pair_loss(a, b, 0.3, "both_views")) == pytest.approx(float(ref), rel=1e-5)


def test_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        train.contrastive_loss(_unit(2, 3, 0), _unit(2, 3, 1), 0.0)
    with pytest.raises(ValueError, match="expected"):
        train.contrastive_loss(_unit(2, 3, 0), _unit(2, 4, 1))
    with pytest.raises(ValueError, match="negatives"):
        train.pair_loss(_unit(2, 3, 0), _unit(2, 3, 1), 0.1, "queue")


# ---- positives ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data():
    """Two visually different classes of 28x28 'images' (bright top vs bright bottom)."""
    rng = np.random.default_rng(0)
    n = 192
    labels = np.arange(n) % 2
    imgs = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    imgs[labels == 0, :12] += 150
    imgs[labels == 1, 16:] += 150
    imgs.setflags(write=False)
    labels.setflags(write=False)
    return imgs, labels


def _tiny_cfg(positives="labels", **kw):
    base = dict(
        positives=positives,
        arch=dict(widths=[8, 16], fc=[32], dim=16),
        epochs=4,
        batch_size=32,
        lr=3e-3,
        augment=train.LIGHT_AUGMENT,
        eval_queries=0,
        checkpoint_seconds=1e9,
    )
    base.update(kw)
    return train.TrainConfig(**base)


def _same_class_clicks(labels, n_pairs=400, seed=1):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, len(labels), n_pairs)
    same = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    return np.stack([q, [rng.choice(same[labels[i]]) for i in q]], 1)


def test_label_positives_share_the_class_and_mask_it():
    labels = np.repeat(np.arange(4), 25)
    sampler = train.LabelPositives(labels)
    batches = list(train.epoch_pairs(sampler, 16, np.random.default_rng(0)))
    assert len(batches) == 100 // 16  # the last partial batch is dropped
    seen = np.concatenate([b.queries for b in batches])
    assert len(np.unique(seen)) == len(seen) == 96  # an epoch visits images without repeats
    for b in batches:
        np.testing.assert_array_equal(labels[b.positives], labels[b.queries])
        np.testing.assert_array_equal(b.mask.numpy(), labels[b.queries][:, None] == labels[b.queries][None, :])


def test_click_positives_come_from_the_pairs():
    pairs = np.array([[1, 5], [2, 5], [3, 7], [1, 8]] * 4)
    batches = list(train.epoch_pairs(train.ClickPositives(pairs), 4, np.random.default_rng(0)))
    assert len(batches) == 4
    logged = {tuple(p) for p in pairs}
    for b in batches:
        assert all((q, p) in logged for q, p in zip(b.queries, b.positives, strict=True))
        # two rows showing the same image never treat it as a negative of itself
        same = (b.positives[:, None] == b.positives[None, :]) | (b.queries[:, None] == b.queries[None, :])
        np.testing.assert_array_equal(b.mask.numpy(), same)


def test_neighbour_positives_come_from_the_mined_lists_and_mask_duplicates(tiny_data):
    imgs, _ = tiny_data
    neighbours = train.mine_neighbours(_unit(len(imgs), 8, 5).numpy(), 3)
    sampler = train.ViewPositives(len(imgs), neighbours, neighbour_prob=0.5)
    n_neighbour = 0
    for b in train.epoch_pairs(sampler, 32, np.random.default_rng(0)):
        own = b.positives == b.queries
        assert all(b.positives[i] in neighbours[b.queries[i]] for i in np.flatnonzero(~own))
        n_neighbour += int((~own).sum())
        ids = np.concatenate([b.queries, b.positives])
        np.testing.assert_array_equal(b.mask.numpy(), ids[:, None] == ids[None, :])
    assert 0.3 < n_neighbour / (len(imgs) // 32 * 32) < 0.7  # about neighbour_prob of the pairs
    plain = next(train.epoch_pairs(train.ViewPositives(len(imgs)), 32, np.random.default_rng(0)))
    np.testing.assert_array_equal(plain.positives, plain.queries)  # SimCLR: two views of the same image
    with pytest.raises(ValueError, match="self_supervised option"):
        _tiny_cfg("labels", neighbours="pixels")


def test_mine_neighbours_matches_sklearn_brute_force():
    from sklearn.neighbors import NearestNeighbors

    E = _unit(500, 12, 3).numpy()
    got = train.mine_neighbours(E, k=4, chunk=64)  # several chunks, self excluded
    ref = (
        NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(E).kneighbors(E, return_distance=False)
    )
    assert (got != np.arange(500)[:, None]).all()
    # sklearn lists the point itself first; ties are measure-zero with random vectors
    np.testing.assert_array_equal(got, ref[:, 1:])
    with pytest.raises(ValueError, match="k must be"):
        train.mine_neighbours(E, k=500)


def test_neighbour_features_sources(tiny_data):
    imgs, labels = tiny_data
    pixels = train.neighbour_features(imgs, "pixels")
    both = train.neighbour_features(imgs, "hog_pixels")
    assert len(pixels) == len(both) == len(imgs) and both.shape[1] == pixels.shape[1] + 64
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, rtol=1e-5)
    # half of each row is the (unit) pixel part, half the (unit) HOG part
    np.testing.assert_allclose(np.linalg.norm(both[:, : pixels.shape[1]], axis=1), np.sqrt(0.5), rtol=1e-4)
    nb = train.mine_neighbours(both, 3)
    assert (labels[nb] == labels[:, None]).mean() > 0.95
    with pytest.raises(ValueError, match="source"):
        train.neighbour_features(imgs, "labels")
    with pytest.raises(ValueError, match="neighbours"):
        _tiny_cfg("self_supervised", neighbours="clicks")


def test_training_data_keeps_click_pairs_of_training_images(tiny_data):
    imgs, labels = tiny_data
    pairs = np.concatenate([_same_class_clicks(labels), [[5, 500], [900, 3]]])  # two point outside the images
    data = train.training_data(_tiny_cfg("clicks", n_train=300), imgs, labels, pairs)
    assert len(data.click_pairs) == 300 and (data.click_pairs < len(imgs)).all() and len(data.images) == len(imgs)
    assert len(train.training_data(_tiny_cfg("labels", n_train=50), imgs, labels).images) == 50
    with pytest.raises(train.TrainingError, match="click pairs"):
        train.training_data(_tiny_cfg("clicks"), imgs, labels, pairs[:10])


# ---- the loop, step by step -----------------------------------------------------------------


def test_the_loop_is_its_steps(tiny_data):
    """Calling the steps one by one (as a notebook does) trains exactly what run_epoch trains."""
    imgs, labels = tiny_data
    cfg = _tiny_cfg("self_supervised", epochs=1, projection_dim=16, negatives="both_views")
    data = train.training_data(cfg, imgs, labels)
    by_hand = train.start_run(cfg, data)
    losses = []
    for pairs in train.epoch_pairs(by_hand.sampler, cfg.batch_size, by_hand.rng):
        views = train.make_batch(by_hand, pairs)
        assert views.shape == (2 * cfg.batch_size, 1, 28, 28)
        losses.append(train.train_step(by_hand, pairs, views))
    looped = train.start_run(cfg, data)
    assert train.run_epoch(looped) is True  # one epoch is the whole budget
    for a, b in zip(by_hand.model.state_dict().values(), looped.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert len(losses) == by_hand.progress.step == looped.progress.step == len(imgs) // 32
    # train_step's loss is the contrastive loss of the batch, recomputed here from the embeddings
    run = train.start_run(cfg, data)
    pairs = next(train.epoch_pairs(run.sampler, cfg.batch_size, run.rng))
    gen_state = run.generator.get_state()
    run.model.train()
    views = train.make_batch(run, pairs)
    z = F.normalize(run.model["head"](run.model["net"](views)), dim=1)
    expected = train.both_views_loss(z[:32], z[32:], cfg.temperature, pairs.mask)
    run.generator.set_state(gen_state)  # the same random views again
    got = train.batch_loss(run, train.make_batch(run, pairs), pairs)
    assert float(got.detach()) == pytest.approx(float(expected.detach()))


def _loop_as_the_notebook_writes_it(run: train.TrainingRun) -> None:
    """Notebook 03's visible loop: batch, two views, embed, similarity matrix / temperature,
    cross-entropy against the positive's index (both directions), backward, step."""
    b, tau = run.cfg.batch_size, run.cfg.temperature
    target = torch.arange(b)
    for _ in range(int(run.cfg.epochs)):
        for pairs in train.epoch_pairs(run.sampler, b, run.rng):
            train.set_learning_rate(run)
            run.model.train()
            views = train.make_batch(run, pairs)
            z = train.embed_batch(run, views)
            logits = z[:b] @ z[b:].T / tau
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            run.optimizer.zero_grad()
            loss.backward()
            run.optimizer.step()
            run.progress.step += 1


def test_the_notebooks_loop_written_out_trains_what_run_epoch_trains(tiny_data):
    """The loop a learner reads is the library's training step, bit for bit."""
    imgs, labels = tiny_data
    cfg = _tiny_cfg("self_supervised", epochs=2, augment=train.LIGHT_AUGMENT)
    data = train.training_data(cfg, imgs, labels)
    with models.torch_threads(cfg.threads):
        by_hand = train.start_run(cfg, data)
        _loop_as_the_notebook_writes_it(by_hand)
        library = train.start_run(cfg, data)
        while not train.run_epoch(library):
            pass
    assert library.progress.step == by_hand.progress.step == 2 * (len(imgs) // cfg.batch_size)
    for a, c in zip(by_hand.model.state_dict().values(), library.model.state_dict().values(), strict=True):
        assert torch.equal(a, c)
    # train_encoder (which sets cfg.threads itself) trains the same weights
    assert train.finish(by_hand).fingerprint == train.train_encoder(cfg, data=data, progress=False).fingerprint


def test_learning_rate_warms_up_then_follows_a_cosine():
    assert train.lr_factor(0.0, 0.1) == pytest.approx(1e-3)  # never exactly 0
    assert train.lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert train.lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert train.lr_factor(0.55, 0.1) == pytest.approx(0.5)  # half way through the decay: cos(pi/2)
    assert train.lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    decay = [train.lr_factor(f, 0.1) for f in np.linspace(0.1, 1.0, 20)]
    assert all(a > b for a, b in itertools.pairwise(decay))


@pytest.mark.parametrize("positives", ["self_supervised", "labels", "clicks"])
def test_short_training_lowers_loss(tiny_data, positives):
    imgs, labels = tiny_data
    pairs = _same_class_clicks(labels) if positives == "clicks" else None
    ssl = positives == "self_supervised"
    cfg = _tiny_cfg(
        positives,
        epochs=6,
        projection_dim=16 if ssl else None,
        augment=train.STRONG_AUGMENT if ssl else train.LIGHT_AUGMENT,
    )
    enc = train.train_encoder(cfg, imgs, labels, click_pairs=pairs, progress=False)
    losses = [h["loss"] for h in enc.metadata["history"]]
    assert len(losses) >= 4
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05
    assert enc.embed(imgs).shape == (len(imgs), 16)
    assert enc.metadata["config_key"] == cfg.key()


def test_same_seed_same_embeddings(tiny_data):
    imgs, labels = tiny_data
    a = train.train_encoder(_tiny_cfg(epochs=1), imgs, labels, progress=False)
    b = train.train_encoder(_tiny_cfg(epochs=1), imgs, labels, progress=False)
    c = train.train_encoder(_tiny_cfg(epochs=1, seed=1), imgs, labels, progress=False)
    np.testing.assert_array_equal(a.embed(imgs), b.embed(imgs))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_checkpoint_resume_continues_exactly(tiny_data, tmp_path):
    """Two epochs straight, or one epoch, a checkpoint, a fresh process state and the second: the same weights."""
    imgs, labels = tiny_data
    cfg = _tiny_cfg("self_supervised", epochs=2, projection_dim=16, neighbours="pixels", neighbour_k=3)
    data = train.training_data(cfg, imgs, labels)
    straight = train.start_run(cfg, data)
    train.run_epoch(straight)
    train.run_epoch(straight)
    first = train.start_run(cfg, data)
    train.run_epoch(first)
    train.save_checkpoint(first, tmp_path / "run.ckpt")
    torch.manual_seed(123)  # disturb the global random state: resume must restore it
    second = train.start_run(cfg, data)
    assert train.resume(second, tmp_path / "run.ckpt")
    train.run_epoch(second)
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert second.progress.step == straight.progress.step == 2 * (len(imgs) // 32)
    # a checkpoint of another configuration, or a damaged file, is ignored
    assert not train.resume(train.start_run(_tiny_cfg("self_supervised", epochs=3), data), tmp_path / "run.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    assert not train.resume(train.start_run(cfg, data), tmp_path / "bad.ckpt")


def test_interrupted_training_resumes_from_its_checkpoint(tiny_data, tmp_path):
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
    saved = torch.load(ck, weights_only=True)["progress"]["step"]
    assert 0 < saved < 2 * (len(imgs) // 32)
    enc = train.train_encoder(cfg, imgs, labels, checkpoint=ck, progress=False)
    assert not ck.exists()
    assert enc.metadata["train_steps"] == 2 * (len(imgs) // 32)
    uninterrupted = train.train_encoder(cfg, imgs, labels, progress=False)
    np.testing.assert_allclose(enc.embed(imgs), uninterrupted.embed(imgs), atol=1e-5)


def test_the_budget_is_a_number_of_steps(tiny_data):
    imgs, labels = tiny_data
    steps_per_epoch = len(imgs) // 32
    enc = train.train_encoder(_tiny_cfg(epochs=1.5), imgs, labels, progress=False)
    # 1.5 epochs of 6 steps: 9 steps, whatever the machine's speed
    assert enc.metadata["train_steps"] == math.ceil(1.5 * steps_per_epoch) == 9
    assert enc.metadata["epochs"] == pytest.approx(1.5)
    # the learning rate of the last step is that of the last planned step (cosine almost at 0)
    assert enc.metadata["history"][-1]["lr"] == pytest.approx(3e-3 * train.lr_factor(8 / 9, 0.03))


def test_training_runs_on_the_configured_threads_and_restores_the_callers(tiny_data):
    imgs, labels = tiny_data
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = train.train_encoder(
            _tiny_cfg(epochs=1, threads=2),
            imgs,
            labels,
            progress=False,
            callback=lambda r: seen.append(torch.get_num_threads()),
        )
        assert seen and set(seen) == {2} and enc.metadata["threads"] == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    # the thread count changes floating-point sums, so it is part of what a model is
    assert _tiny_cfg(threads=1).key() != _tiny_cfg(threads=2).key()
    with pytest.raises(ValueError, match="threads"):
        _tiny_cfg(threads=0)


def test_training_with_neighbour_positives(tiny_data):
    imgs, labels = tiny_data
    cfg = _tiny_cfg(
        "self_supervised",
        epochs=4,
        projection_dim=16,
        augment=train.STRONG_AUGMENT,
        negatives="both_views",
        neighbours="pixels",
        neighbour_k=3,
    )
    enc = train.train_encoder(cfg, imgs, labels, progress=False)
    losses = [h["loss"] for h in enc.metadata["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    mining = enc.metadata["neighbour_mining"]
    assert mining["source"] == "pixels" and mining["k"] == 3 and 0 < mining["seconds"] <= enc.metadata["train_seconds"]
    # the two tiny classes are far apart in pixels: the mined neighbours share the class
    assert mining["same_class"] > 0.95
    plain = train.train_encoder(_tiny_cfg("self_supervised", epochs=1, projection_dim=16), imgs, labels, progress=False)
    assert plain.metadata["neighbour_mining"] == {}


# ---- reuse, configuration, command line -----------------------------------------------------


def test_two_callers_asking_for_one_model_train_it_once(tiny_data, tmp_path, monkeypatch):
    """The second caller waits on the model's lock and then reuses the file the first wrote."""
    import threading

    imgs, labels = tiny_data
    started, calls = threading.Event(), []
    real_train = train.train_encoder

    def slow_train(cfg, *, data, checkpoint=None, progress=True):
        calls.append(threading.get_ident())
        started.set()
        time.sleep(0.5)  # the other caller arrives while this one trains
        return real_train(cfg, data=data, checkpoint=checkpoint, progress=False)

    monkeypatch.setattr(registry, "train_encoder", slow_train)
    cfg = _tiny_cfg(epochs=1)
    data = train.training_data(cfg, imgs, labels)
    got: list = []

    def ask():
        got.append(train.ensure_model("labels", "smoke", cfg=cfg, models_dir=tmp_path, data=data, progress=False))

    first = threading.Thread(target=ask)
    first.start()
    assert started.wait(30)
    ask()  # while the first is still training
    first.join(60)
    assert len(calls) == 1 and got[0] == got[1] and got[0].exists()


def test_ensure_model_trains_once_then_reuses(tiny_data, tmp_path, monkeypatch):
    imgs, labels = tiny_data
    calls = []
    real_train = train.train_encoder

    def fake_train(cfg, *, data, checkpoint=None, progress=True):
        calls.append(cfg.key())
        return real_train(cfg, data=data, checkpoint=checkpoint, progress=False)

    monkeypatch.setattr(registry, "train_encoder", fake_train)
    cfg = _tiny_cfg(epochs=1)
    data = train.training_data(cfg, imgs, labels)
    p1 = train.ensure_model("labels", "smoke", cfg=cfg, models_dir=tmp_path, data=data)
    assert p1 == tmp_path / "smoke" / "labels.pt" and p1.exists()
    fp = models.load_encoder(p1).fingerprint
    assert train.ensure_model("labels", "smoke", cfg=cfg, models_dir=tmp_path, data=data) == p1 and len(calls) == 1
    assert models.load_encoder(p1).fingerprint == fp
    cfg2 = _tiny_cfg(epochs=2)  # configuration changed → retrain
    train.ensure_model("labels", "smoke", cfg=cfg2, models_dir=tmp_path, data=data)
    assert len(calls) == 2
    train.ensure_model("labels", "smoke", cfg=cfg2, force=True, models_dir=tmp_path, data=data)
    assert len(calls) == 3
    fewer = train.training_data(cfg2, imgs[:100], labels[:100])  # other data, same configuration → retrain
    train.ensure_model("labels", "smoke", cfg=cfg2, models_dir=tmp_path, data=fewer)
    assert len(calls) == 4
    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert train.model_path("labels", "full") == tmp_path / "elsewhere" / "labels.pt"
    assert (
        train.model_path("labels", "full", backbone="efficientnet")
        == tmp_path / "elsewhere" / "efficientnet_finetuned.pt"
    )
    with pytest.raises(ValueError, match="positives"):
        train.model_path("likes")
    assert train.stored_reuse_key(tmp_path / "missing.pt") is None


def _click_log_db(path, pairs):
    """A database holding only what the click log is read from: an interactions table."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE interactions (id INTEGER PRIMARY KEY, query_image_id INTEGER, "
            "displayed_image_id INTEGER, type TEXT)"
        )
        rows = [(int(q), int(c), "click") for q, c in pairs] + [(1, 2, "impression")] * 5
        conn.executemany("INSERT INTO interactions (query_image_id, displayed_image_id, type) VALUES (?, ?, ?)", rows)
    return path


def test_click_log_is_read_in_order_and_its_fingerprint_enters_the_reuse_key(tiny_data, tmp_path, monkeypatch):
    imgs, labels = tiny_data
    pairs = _same_class_clicks(labels, n_pairs=300)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    db = _click_log_db(tmp_path / "log.db", [*pairs, (3, 3), (5, 10_000)])  # a self-click, an unknown image
    log = train.read_click_log(db, n_train=len(imgs))
    # impressions, self-clicks and images outside the training set are not pairs; the order is the log's
    np.testing.assert_array_equal(log.pairs, pairs)
    assert log.path == str(db) and log.fingerprint == train.pairs_fingerprint(pairs)
    assert train.pairs_fingerprint(pairs[::-1]) != log.fingerprint
    monkeypatch.setattr(
        registry,
        "training_data",
        lambda cfg, click_log=None: train.training_data(cfg, imgs, labels, click_log=click_log),
    )
    calls = []
    real_train = train.train_encoder
    monkeypatch.setattr(
        registry,
        "train_encoder",
        lambda cfg, *, data, checkpoint=None, progress=True: (
            calls.append(1) or real_train(cfg, data=data, progress=False)
        ),
    )
    cfg = _tiny_cfg("clicks", epochs=1)
    path = train.ensure_model("clicks", "smoke", cfg=cfg, models_dir=tmp_path, click_log=db)
    meta = models.load_encoder(path).metadata
    assert meta["training_data"]["click_log"] == {"path": str(db), "fingerprint": log.fingerprint}
    train.ensure_model("clicks", "smoke", cfg=cfg, models_dir=tmp_path, click_log=db)
    assert len(calls) == 1  # the same log: reused
    with sqlite3.connect(db) as conn:  # one more click logged
        conn.execute("INSERT INTO interactions (query_image_id, displayed_image_id, type) VALUES (7, 9, 'click')")
    train.ensure_model("clicks", "smoke", cfg=cfg, models_dir=tmp_path, click_log=db)
    assert len(calls) == 2  # a changed log retrains


def test_config_validation_and_reuse_keys():
    with pytest.raises(ValueError, match="epochs"):
        train.TrainConfig(positives="labels", epochs=0)
    with pytest.raises(ValueError, match="positives"):
        train.TrainConfig(positives="stars", epochs=1)
    assert train.default_config("labels", "smoke").key() != train.default_config("labels", "full").key()
    a = train.default_config("labels")
    b = train.default_config("labels")
    b.checkpoint_seconds = 5  # how often a run saves does not change the model
    assert a.key() == b.key()
    b.temperature = 0.2
    assert a.key() != b.key()
    assert train.TrainConfig.from_dict(a.to_dict()).key() == a.key()
    # every full-profile budget is epochs on the fixed thread count
    for positives, backbone in [
        ("self_supervised", "cnn"),
        ("labels", "cnn"),
        ("clicks", "cnn"),
        ("labels", "efficientnet"),
    ]:
        c = train.default_config(positives, "full", backbone)
        assert c.epochs == train.FULL_EPOCHS[positives if backbone == "cnn" else backbone]
        assert c.threads == train.TRAIN_THREADS


def test_cli_arguments():
    p = argparse.ArgumentParser()
    train.cli_add_arguments(p)
    a = p.parse_args(
        ["--positives", "clicks", "--epochs", "2", "--profile", "smoke", "--threads", "1", "--clicks-db", "x.db"]
    )
    assert a.positives == "clicks" and a.epochs == 2 and a.threads == 1 and str(a.clicks_db) == "x.db"
    cfg = train.cli.config_from_args(a)
    assert (cfg.epochs, cfg.threads, cfg.positives) == (2, 1, "clicks")
    default = train.cli.config_from_args(p.parse_args(["--positives", "labels"]))
    assert default.key() == train.default_config("labels").key()
    with pytest.raises(SystemExit):  # wall-clock budgets are gone: a run must not depend on the machine's load
        p.parse_args(["--positives", "clicks", "--minutes", "2"])
    with pytest.raises(ValueError, match="threads"):
        train.cli.config_from_args(p.parse_args(["--positives", "labels", "--threads", "0"]))
