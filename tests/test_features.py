"""Feature engineering: colour modes, sizes, z-score statistics, augmentations, pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vs_lib import features


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    return Image.fromarray(a)


def test_every_pil_mode_converts_to_model_mode(photo):
    examples = features.mode_examples(photo)
    assert set(examples) == set(features.PIL_MODES)
    for mode, im in examples.items():
        assert im.mode == mode
        out = features.to_mode(im, "L")
        assert out.mode == "L" and out.size == photo.size
        rgb = features.to_mode(im, "RGB")
        assert rgb.mode == "RGB"


def test_sixteen_bit_and_float_are_rescaled_not_clipped(photo):
    gray = np.asarray(photo.convert("L"))
    for im in (Image.fromarray(gray.astype(np.uint16) * 257), Image.fromarray(gray.astype(np.float32) / 255.0)):
        out = np.asarray(features.to_mode(im, "L")).astype(int)
        expected = np.round((gray - gray.min()) / (gray.max() - gray.min()) * 255).astype(int)
        assert np.abs(out - expected).max() <= 1


def test_transparency_is_composited_on_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    assert np.all(np.asarray(features.to_mode(im, "L")) == 255)
    la = Image.new("LA", (4, 4), (0, 255))  # opaque black
    assert np.all(np.asarray(features.to_mode(la, "L")) == 0)


def test_preprocess_shapes_and_zscore():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    mean, std = features.fit_normalisation(imgs)
    assert mean == pytest.approx(imgs.mean() / 255) and std == pytest.approx((imgs / 255).std())
    pre = features.Preprocess(mean=(mean,), std=(std,))
    x = pre(imgs)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.mean()) == pytest.approx(0, abs=1e-5) and float(x.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    np.testing.assert_array_equal(pre.invert(x), imgs)
    # (n, H, W, C) colour input, other sizes, list of mixed PIL images → same model shape
    assert pre(rng.integers(0, 256, (3, 50, 60, 3), dtype=np.uint8)).shape == (3, 1, 28, 28)
    mixed = [Image.new("RGB", (10, 20)), Image.new("P", (64, 64)), Image.new("I;16", (7, 9))]
    assert pre(mixed).shape == (3, 1, 28, 28)
    assert features.Preprocess.from_dict(pre.to_dict()) == pre


def test_bad_inputs_raise_clear_errors():
    pre = features.Preprocess()
    with pytest.raises(features.ImageInputError, match="uint8"):
        pre(np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(features.ImageInputError, match="shape"):
        pre(np.zeros((2, 28, 28, 2), dtype=np.uint8))
    with pytest.raises(features.ImageInputError, match="batch"):
        pre(Image.new("L", (28, 28)))
    with pytest.raises(features.ImageInputError, match="item 1"):
        pre([Image.new("L", (28, 28)), "not an image"])


def test_augment_each_alone_and_all_keep_shape_and_are_seeded():
    x = torch.randn(8, 1, 28, 28)
    aug = features.BatchAugment(fill=-0.8)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    for name in features.AUGMENTATIONS:
        y = aug.only(name)(x, torch.Generator().manual_seed(1))
        assert y.shape == x.shape
    # flip alone is an exact mirror image
    flipped = aug.only("flip")(x, torch.Generator().manual_seed(0))
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    # all off is the identity
    ident = features.BatchAugment(crop_scale=(1, 1), ratio=(1, 1), flip=0, rotate=0, brightness=0, contrast=0, erase=0)
    assert torch.allclose(ident(x), x, atol=1e-5)
    with pytest.raises(ValueError, match="unknown augmentation"):
        aug.only("sepia")


def test_show_matrix_and_histogram_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    ax = features.show_matrix(a)
    assert [t.get_text() for t in ax.texts][:3] == ["0", "1", "2"]
    ax2 = features.show_histogram(a)
    assert "mean 7.50" in ax2.get_title()
    plt.close("all")


def test_hog_features_ignore_brightness_and_tell_edge_directions_apart():
    vertical = np.zeros((28, 28), np.uint8)
    vertical[:, 10:18] = 200  # a bright vertical bar: horizontal gradients
    horizontal = vertical.T.copy()
    shifted = np.roll(vertical, 1, axis=1)
    h = features.hog_features(np.stack([vertical, vertical // 2, horizontal, shifted]))
    assert h.dtype == np.float32 and h.shape[0] == 4
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, rtol=1e-5)
    assert h[0] @ h[1] > 0.999  # half the brightness: same block-normalised gradients
    assert h[0] @ h[3] > 0.99  # moved by a pixel, within the same cells: the same edges
    assert h[0] @ h[2] < 0.5  # the same bar turned 90 degrees: different directions
    with pytest.raises(ValueError, match="grayscale"):
        features.hog_features(np.zeros((2, 28, 28, 3), np.uint8))


def test_hog_features_match_scikit_image():
    from skimage.feature import hog

    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    imgs[:3, 5:20, 8:14] = 255  # some images with large flat areas and straight edges
    imgs[3:, :, :] //= 4
    imgs = np.concatenate([imgs, rng.integers(0, 256, (2, 33, 30)).astype(np.uint8)[:, :28, :28]])
    ref = np.stack(
        [hog(im, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2), block_norm="L2-Hys") for im in imgs]
    )
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = features.hog_features(imgs, chunk=3)  # several chunks
    assert got.shape == ref.shape == (len(imgs), 6 * 6 * 4 * 9)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    odd = rng.integers(0, 256, (2, 30, 21)).astype(np.uint8)  # sizes not a multiple of the cell
    ref_odd = np.stack([hog(im, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for im in odd])
    ref_odd /= np.linalg.norm(ref_odd, axis=1, keepdims=True)
    np.testing.assert_allclose(features.hog_features(odd, cell=8), ref_odd, atol=1e-6)
    with pytest.raises(ValueError, match="too small"):
        features.hog_features(np.zeros((1, 6, 6), np.uint8))


def test_fit_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12)) + 3.0  # correlated, off-centre
    fit = features.fit_pca(x, 4)
    centred = x - x.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    assert fit.components.shape == (4, 12) and fit.mean == pytest.approx(x.mean(0), abs=1e-5)
    # the same axes up to sign, the same share of variance along each
    np.testing.assert_allclose(np.abs(np.sum(fit.components * vt[:4], axis=1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(fit.explained_variance_ratio, sv[:4] ** 2 / (sv**2).sum(), rtol=1e-4)
    np.testing.assert_allclose(np.abs(fit.transform(x)), np.abs(centred @ vt[:4].T), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="dim"):
        features.fit_pca(x, 13)
