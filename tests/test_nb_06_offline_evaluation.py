import numpy as np
import pytest
from _reference import pixel_figures

pytestmark = pytest.mark.notebooks


def test_offline_evaluation_notebook(run_notebook):
    r = run_notebook("06_offline_evaluation")
    from vs_lib import evaluate

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
    # the model comparison: the same protocol as notebook 03, pixels recomputed independently
    protocol = evaluate.profile_protocol("smoke", seed=0)
    assert (r["n_queries"], r["n_gallery"]) == (len(protocol.query_ids), len(protocol.gallery_ids))
    systems = r["systems"]
    reference = pixel_figures(protocol, k)
    for name in (f"P@{k}", f"mAP@{k}"):
        assert systems["pixels"][name]["mean"] == pytest.approx(reference[name], abs=0.005), name
    for name, ms in systems.items():
        # graded relevance forgives near misses: nDCG above mAP for every system
        assert ms[f"mAP@{k}"]["mean"] < ms[f"nDCG@{k}"]["mean"] <= 1.0, name
    assert systems["labels"][f"mAP@{k}"]["mean"] > systems["pixels"][f"mAP@{k}"]["mean"]
    # the per-class table averages back to the overall figure (weights: queries per class)
    counts = np.bincount(protocol.query_labels, minlength=10)
    classes = list(evaluate.metrics.FASHION_MNIST_CLASSES)
    for name, per_class in r["per_class_map"].items():
        weighted = sum(per_class[c] * counts[classes.index(c)] for c in per_class) / counts.sum()
        assert weighted == pytest.approx(systems[name][f"mAP@{k}"]["mean"], abs=1e-3), name


def test_notebooks_03_and_06_report_the_same_figures_for_the_same_model(run_notebook):
    r03, r06 = run_notebook("03_embedding_model"), run_notebook("06_offline_evaluation")
    k = r06["k"]
    for system in ("pixels", "pca", "labels"):
        for name in (f"P@{k}", f"mAP@{k}"):
            assert r03["methods"][system][name] == pytest.approx(r06["systems"][system][name]["mean"], abs=1e-9), (
                system,
                name,
            )
