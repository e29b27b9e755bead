import pytest

pytestmark = pytest.mark.notebooks


def test_feature_engineering_notebook(run_notebook):
    r = run_notebook("02_feature_engineering")
    assert r["train_mean"] == pytest.approx(0.2860, abs=1e-3)
    assert r["train_std"] == pytest.approx(0.3530, abs=1e-3)
    assert r["modes_converted"] == 10
    assert set(r["modes"]) == {"1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"}
    assert r["pipeline_output_shape"] == [5, 1, 28, 28]
    assert abs(r["zscore_mean_train"]) < 0.05 and r["zscore_std_train"] == pytest.approx(1.0, abs=0.05)
    assert r["preprocess_images_per_second"] > 1000
    assert len(r["augmentations"]) == 7
    assert r["hog_dim"] == 6 * 6 * 4 * 9
    by = r["retrieval_by_features"]
    assert set(by) == {"raw pixels", "PCA-128 of pixels", "HOG", "PCA-128 + HOG"}
    # every feature retrieves far above chance (0.1 on ten balanced classes)
    assert all(0.6 < row["P@1"] <= 1 and 0 < row["P@10"] <= 1 for row in by.values())
