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
