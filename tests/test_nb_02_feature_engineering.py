"""Notebook 02 in the smoke profile, its figures checked against independent computations."""

import numpy as np
import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def results(run_notebook):
    return run_notebook("02_feature_engineering")


def test_training_statistics_and_pipeline(results):
    # the training statistics, against an independent NumPy computation on the same images
    from vs_lib import data

    pixels = data.load_fashion_mnist().train_images / 255.0
    assert results["train_mean"] == pytest.approx(pixels.mean(), rel=1e-6)
    assert results["train_std"] == pytest.approx(pixels.std(), rel=1e-6)
    assert results["background_share"] == pytest.approx(float((pixels == 0).mean()), rel=1e-9)
    assert results["background_z"] == pytest.approx(-pixels.mean() / pixels.std(), rel=1e-3)
    assert abs(results["zscore_mean_train"]) < 0.05 and results["zscore_std_train"] == pytest.approx(1.0, abs=0.05)
    assert results["pipeline_output_shape"] == [5, 1, 28, 28]


def test_colour_modes_pil_clips_wide_integers_and_floats_but_gets_palette_right(results):
    # PIL's own conversion clips the 16-bit photo to (almost) white; to_mode rescales it linearly,
    # so the picture survives: its pixels correlate perfectly with the 8-bit grey ones
    assert results["pil_convert_mean"]["I;16"] > 250 and results["to_mode_mean"]["I;16"] < 200
    assert results["pil_convert_mean"]["F"] < 2  # floats in [0, 1] truncated to 0 or 1: black
    assert results["pil_convert_loses_picture"] == ["I;16", "I", "F"]
    corr = results["to_mode_correlation_with_L"]
    for mode in ("P", "RGB", "CMYK", "I;16", "I", "F"):
        assert corr[mode] > 0.99, (mode, corr[mode])
    for mode in ("L", "P", "RGB", "CMYK"):  # where PIL is right, to_mode is PIL's conversion
        assert results["pil_convert_max_difference_to_mode"][mode] == 0, mode
    assert abs(results["to_mode_mean"]["RGB"] - results["to_mode_mean"]["L"]) < 1  # the same luma formula
    assert results["luma_formula_max_error"] <= 1


def test_pil_palette_to_grey_is_the_bt601_luma_of_the_palette_colours():
    """The notebook's claim that PIL converts P → L correctly, checked by a palette lookup in NumPy."""
    from PIL import Image
    from skimage import data as skdata

    from vs_lib import features

    p = Image.fromarray(skdata.chelsea()).resize((150, 100)).quantize(64)
    palette = np.asarray(p.getpalette(), dtype=np.float64).reshape(-1, 3)
    rgb = palette[np.asarray(p)]
    luma = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
    assert np.abs(np.asarray(p.convert("L"), dtype=np.float64) - luma).max() <= 1
    np.testing.assert_array_equal(np.asarray(features.to_mode(p, "L")), np.asarray(p.convert("L")))


def test_augmentations_shown_are_the_trained_models(results):
    from vs_lib import train

    used = results["self_supervised_augmentation"]
    trained_with = train.default_config("self_supervised", "full").augment
    shown = results["augmentation_sets"][used]
    for key in ("crop_scale", "rotate", "brightness", "contrast", "erase", "flip"):
        assert shown[key] == pytest.approx(trained_with[key]), key
    assert set(results["augmentation_sets"]) == {"strong (SimCLR-style)", "mild"}
    change = results["augmentation_view_change"]
    assert change["mild"] < change["strong (SimCLR-style)"]
    # every augmentation, applied alone, really changes the images
    assert all(v > 0.5 for v in results["augmentation_change"].values()), results["augmentation_change"]


def test_hog_and_retrieval_by_features(results):
    # HOG: 6 x 6 blocks of 2 x 2 cells of 4 x 4 pixels, 9 directions each, on a 28 x 28 image
    assert results["hog_dim"] == 6 * 6 * 4 * 9
    by = results["retrieval_by_features"]
    # every feature retrieves far above chance (0.1 on ten balanced classes)
    assert all(0.6 < row["P@1"] <= 1 and 0 < row["P@10"] <= 1 for row in by.values())
    assert by["raw pixels"]["dim"] == 784 and by["PCA-128 of pixels"]["dim"] == 128
