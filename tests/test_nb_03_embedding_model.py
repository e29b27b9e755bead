import pytest

pytestmark = pytest.mark.notebooks

METHODS = {"pixels", "pca", "untrained", "efficientnet_frozen", "self_supervised", "labels", "clicks",
           "efficientnet_finetuned"}


def test_embedding_model_notebook(run_notebook):
    r = run_notebook("03_embedding_model")
    assert r["worked_example_loss"] == pytest.approx(r["worked_example_loss_by_hand"], rel=1e-5)
    assert r["embedding_dim"] == 128 and r["layers"] >= 10
    assert set(r["methods"]) == METHODS
    for name, m in r["methods"].items():
        assert 0 <= m["MAP@R"] <= m["P@1"] <= 1, name
        assert 0 <= m["mAP@10"] <= 1 and 0 <= m["P@10"] <= 1
    # even on the smoke slice, raw pixels retrieve far above chance (0.1) ...
    assert r["methods"]["pixels"]["P@1"] > 0.6
    # ... and a few seconds of label training already clusters classes better than pixels
    assert r["methods"]["labels"]["MAP@R"] > r["methods"]["pixels"]["MAP@R"]
    assert r["click_pairs"] > 1000 and 0.3 < r["click_same_class_rate"] < 1
    assert len(r["targets"]) == 5
    # the self-supervision experiment: four trained arms plus the two reference rows
    arms = r["self_supervised_ablation"]
    assert len(arms) == 6 and all(0 <= a["MAP@R"] <= a["P@1"] <= 1 for a in arms.values())
    assert sum(a["train seconds"] > 0 for a in arms.values()) == 5  # all but raw pixels trained
    mining = r["neighbour_mining"]
    assert mining["source"] == "hog_pixels" and mining["k"] == 5 and 0.3 < mining["same_class"] <= 1
