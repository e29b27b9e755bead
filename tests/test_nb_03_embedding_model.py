import itertools
import sqlite3

import numpy as np
import pytest
from _reference import pixel_figures

pytestmark = pytest.mark.notebooks


def test_embedding_model_notebook(run_notebook, notebook_env):
    r = run_notebook("03_embedding_model")
    from vs_lib import evaluate

    assert r["worked_example_loss"] == pytest.approx(r["worked_example_loss_by_hand"], rel=1e-5)
    # the reported figures are those of an independent computation on the same protocol
    protocol = evaluate.profile_protocol("smoke", seed=0)
    assert (r["n_queries"], r["n_gallery"]) == (len(protocol.query_ids), len(protocol.gallery_ids))
    for name, value in pixel_figures(protocol).items():
        assert r["methods"]["pixels"][name] == pytest.approx(value, abs=0.005), name  # float32 near-ties aside
    # even on the smoke slice, raw pixels retrieve far above chance (0.1) ...
    assert r["methods"]["pixels"]["P@1"] > 0.6
    # ... and a few seconds of label training already clusters classes better than pixels
    assert r["methods"]["labels"]["MAP@R"] > r["methods"]["pixels"]["MAP@R"]
    # the click pairs and their purity, recounted from the notebook's database with SQL
    with sqlite3.connect(notebook_env["VS_DB"]) as conn:
        pairs = np.array(
            conn.execute(
                "SELECT query_image_id, displayed_image_id FROM interactions WHERE type = 'click' "
                "AND query_image_id < 60000 AND displayed_image_id < 60000 AND query_image_id != displayed_image_id"
            ).fetchall()
        )
    from vs_lib import data

    labels = data.load_fashion_mnist().train_labels
    assert r["click_pairs"] == len(pairs) > 1000
    assert r["click_same_class_rate"] == pytest.approx((labels[pairs[:, 0]] == labels[pairs[:, 1]]).mean())
    # mined neighbours are look-alikes: far more often of the image's class than chance (0.1)
    for mining in [r["neighbour_mining"], *r["ablation_mining"].values()]:
        assert 0.5 < mining["same_class"] <= 1, mining
    assert r["neighbour_mining"]["source"] == "hog_pixels"
    _check_lessons(r)


def _check_lessons(r):
    """What the new sections teach, recomputed from the notebook's inputs with NumPy."""
    ex = r["worked_example"]
    q, c, tau = np.array(ex["queries"]), np.array(ex["candidates"]), ex["temperature"]
    sims = q @ c.T
    logits = sims / tau
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(q)
    losses = -np.log(p[np.arange(n), np.arange(n)])
    negatives = np.where(np.eye(n, len(c), dtype=bool), -np.inf, sims)
    margins = sims[np.arange(n), np.arange(n)] - negatives.max(1)
    m = r["margin_example"]
    np.testing.assert_allclose(m["losses"], losses, rtol=1e-5)
    np.testing.assert_allclose(m["margins"], margins, rtol=1e-5, atol=1e-6)
    # the lesson: the smallest loss is not the query with the most similar positive, it is the widest margin
    assert m["smallest_loss_query"] == int(losses.argmin()) == int(margins.argmax()) == m["widest_margin_query"]
    assert int(losses.argmin()) != int(sims[np.arange(n), np.arange(n)].argmax())
    # a smaller temperature gives the hardest negative a larger share of the negatives' weight
    share = r["temperature_hardest_share"]
    by_tau = [share[t] for t in sorted(share, key=float, reverse=True)]
    assert all(a < b for a, b in itertools.pairwise(by_tau)), share
    # the visible loop learns, and takes the library's own steps
    loop = r["visible_loop"]
    assert loop["same_as_library"] is True
    assert loop["last_loss"] < loop["first_loss"]
    # the embedding-size sweep: one model per size, float32 bytes = 4 d
    sweep = r["embedding_sweep"]
    assert sorted(int(d) for d in sweep) == [16, 32, 64, 128, 256]
    assert all(row["float32 bytes"] == 4 * int(d) for d, row in sweep.items())
    assert r["sweep_dim_within_001"] in {int(d) for d in sweep}
    best = max(row["MAP@R"] for row in sweep.values())
    assert sweep[str(r["sweep_dim_within_001"])]["MAP@R"] >= best - 0.01
    assert r["plan_dim"] == r["embedding_dim"] == 128
    # the ResNet is trained and scored beside the CNNs; the ViT costs more operations per image
    assert set(r["networks"]) == {"cnn, 1 conv per block (d=128)", "cnn, 2 convs per block", "resnet-style"}
    assert all(0 < row["P@1"] <= 1 for row in r["networks"].values())
    vit = r["vit"]
    assert vit["small ViT (49 tokens)"]["MFLOPs per image"] > vit["cnn (default)"]["MFLOPs per image"] > 0
    # the held-out-gallery check covers every method
    assert set(r["heldout_gallery"]) == set(r["methods"])
    assert r["exercises"] == 3
