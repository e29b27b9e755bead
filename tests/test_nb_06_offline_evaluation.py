import pytest

pytestmark = pytest.mark.notebooks


def test_offline_evaluation_notebook(run_notebook):
    r = run_notebook("06_offline_evaluation")
    k = r["k"]
    # the hand-made examples are exact
    ex = r["example"]
    assert ex["precision@3"] == pytest.approx(1 / 3) and ex["average precision"] == pytest.approx(0.75)
    mis = r["misleading"]
    assert mis["mrr_one_hit"] == mis["mrr_ten_hits"] == 1.0
    assert mis["precision_top3"] == mis["precision_bottom3"]
    assert mis["ap_shirts"] == mis["ap_bags"] and mis["ndcg_shirts"] > 3 * mis["ndcg_bags"]
    assert mis["ndcg_shirts_own_ideal"] == 1.0 and mis["ndcg_shirts_gallery_ideal"] == pytest.approx(0.8)
    assert mis["recall_perfect_top10_of_6000"] == pytest.approx(10 / 6000)
    # the model comparison: every system scored, intervals bracket the means
    systems = r["systems"]
    assert {"pixels", "pca", "labels"} <= set(systems)
    for name, ms in systems.items():
        for m, v in ms.items():
            assert v["low"] - 1e-9 <= v["mean"] <= v["high"] + 1e-9, (name, m)
        # pixel-level similarity already finds the same class most of the time on Fashion-MNIST
        assert 0.3 < ms[f"mAP@{k}"]["mean"] <= ms[f"nDCG@{k}"]["mean"] <= 1.0
    assert 0.6 < systems["pixels"][f"P@{k}"]["mean"] < 0.9
    assert len(r["per_class_map"]["pixels"]) == 10
    assert r["n_queries"] == 500 and r["n_gallery"] == 6000
