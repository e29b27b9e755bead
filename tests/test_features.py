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
