import pytest

pytestmark = pytest.mark.notebooks


def test_feature_engineering_notebook(run_notebook):
    r = run_notebook("02_feature_engineering")
    # the training statistics, against an independent NumPy computation on the same images
    from vs_lib import data

    pixels = data.load_fashion_mnist().train_images / 255.0
    assert r["train_mean"] == pytest.approx(pixels.mean(), rel=1e-6)
    assert r["train_std"] == pytest.approx(pixels.std(), rel=1e-6)
    assert abs(r["zscore_mean_train"]) < 0.05 and r["zscore_std_train"] == pytest.approx(1.0, abs=0.05)
    assert r["pipeline_output_shape"] == [5, 1, 28, 28]
    # colour modes: PIL's own conversion clips the 16-bit photo to (almost) white; to_mode rescales
    # it linearly, so the picture survives: its pixels correlate perfectly with the 8-bit grey ones
    assert r["pil_convert_mean"]["I;16"] > 250 and r["to_mode_mean"]["I;16"] < 200
    corr = r["to_mode_correlation_with_L"]
    for mode in ("P", "RGB", "CMYK", "I;16", "I", "F"):
        assert corr[mode] > 0.99, (mode, corr[mode])
    assert abs(r["to_mode_mean"]["RGB"] - r["to_mode_mean"]["L"]) < 1  # RGB → L is the same luma formula
    # every augmentation, applied alone, really changes the images
    assert all(v > 0.5 for v in r["augmentation_change"].values()), r["augmentation_change"]
    # HOG: 6 x 6 blocks of 2 x 2 cells of 4 x 4 pixels, 9 directions each, on a 28 x 28 image
    assert r["hog_dim"] == 6 * 6 * 4 * 9
    by = r["retrieval_by_features"]
    # every feature retrieves far above chance (0.1 on ten balanced classes)
    assert all(0.6 < row["P@1"] <= 1 and 0 < row["P@10"] <= 1 for row in by.values())
    assert by["raw pixels"]["dim"] == 784 and by["PCA-128 of pixels"]["dim"] == 128
