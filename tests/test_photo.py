"""The photo encoder: its preprocessing against torchvision's transforms, the folded network
against the stock EfficientNet-Lite0, the ImageNet sanity check, transparency, JPEG drafts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision.transforms import v2

from vs_lib import features, folders, models, photo


@pytest.fixture(scope="module")
def encoder():
    with models.torch_threads(1):
        yield photo.photo_encoder()


def reference(geometry: str, im: Image.Image) -> torch.Tensor:
    """torchvision's transforms for the same steps, written from the TF recipe: pad with white or
    crop 224/256 of the short side, bicubic resize to 224, scale to [0, 1], (x − 127/255) / (128/255)."""
    w, h = im.size
    if geometry == "pad":
        side = max(w, h)
        left, top = (side - w) // 2, (side - h) // 2
        first = v2.Pad((left, top, side - w - left, side - h - top), fill=255)
    else:
        first = v2.CenterCrop(int(0.875 * min(w, h)))
    tf = v2.Compose(
        [
            first,
            v2.Resize((224, 224), interpolation=v2.InterpolationMode.BICUBIC),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([127 / 255] * 3, [128 / 255] * 3),
        ]
    )
    return tf(im)[None]


@pytest.mark.parametrize("geometry", ["pad", "center_crop"])
def test_preprocessing_matches_torchvision(geometry):
    im = Image.fromarray(skdata.coffee()).crop((0, 0, 600, 380))  # 600 x 380: an even margin to centre
    ours = photo.photo_preprocess(geometry)([im])
    np.testing.assert_allclose(ours.numpy(), reference(geometry, im).numpy(), atol=1e-6)
    assert ours.shape == (1, 3, 224, 224)


def test_values_are_the_lite_convention_not_imagenet_statistics():
    white = photo.photo_preprocess()([Image.new("RGB", (30, 30), "white")])
    black = photo.photo_preprocess()([Image.new("RGB", (30, 30), "black")])
    assert torch.allclose(white, torch.full_like(white, 128 / 128)) and torch.allclose(
        black, torch.full_like(black, -127 / 128)
    )


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 20))  # left half opaque blue
    la = rgba.convert("LA")
    pal = rgba.convert("P")
    pal.info["transparency"] = pal.getpixel((30, 10))
    key = Image.new("RGB", (40, 20), (10, 200, 10))
    key.info["transparency"] = (10, 200, 10)  # a tRNS colour key on an RGB image
    for im in (rgba, la, pal, key):
        a = np.asarray(features.to_mode(im, "RGB"))
        assert tuple(a[10, 30]) == (255, 255, 255), im.mode
    framed = np.asarray(photo.photo_preprocess().frame(rgba))
    assert framed.shape == (224, 224, 3) and tuple(framed[5, 112]) == (255, 255, 255)  # padding is white too


def test_older_preprocess_files_keep_their_fingerprint():
    pre = features.Preprocess()
    assert "geometry" not in pre.to_dict() and features.Preprocess.from_dict(pre.to_dict()) == pre
    photo_pre = photo.photo_preprocess()
    assert features.Preprocess.from_dict(photo_pre.to_dict()) == photo_pre
    assert photo_pre.to_dict()["geometry"] == "pad"


def test_folded_network_equals_the_stock_lite0(encoder):
    stock = photo.lite0_network()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = stock.extract_features(x).mean(dim=(2, 3))
        got = encoder.network(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_imagenet_sanity_chelsea_is_a_cat_and_coffee_an_espresso(encoder):
    cat, coffee = photo.imagenet_top(encoder, [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())])
    assert 281 <= cat[0][0] <= 285, cat  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee[0][1] == "espresso", coffee
    assert len(photo.imagenet_categories()) == 1000


def test_save_load_round_trip_and_fingerprint(encoder, tmp_path):
    path = encoder.save(tmp_path / "photo.pt")
    loaded = models.load_encoder(path)
    assert loaded.fingerprint == encoder.fingerprint and loaded.dim == 1280
    im = Image.fromarray(skdata.astronaut())
    np.testing.assert_allclose(loaded.embed([im]), encoder.embed([im]), atol=1e-6)
    assert np.linalg.norm(encoder.embed([im])[0]) == pytest.approx(1.0, abs=1e-5)
    crop = models.Encoder(encoder.network, encoder.arch, photo.photo_preprocess("center_crop"), name="photo")
    assert crop.fingerprint != encoder.fingerprint  # the preprocessing is part of the model


def test_ensure_photo_encoder_is_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    first = photo.ensure_photo_encoder()
    mtime = photo.photo_model_path().stat().st_mtime_ns
    again = photo.ensure_photo_encoder()
    assert again.fingerprint == first.fingerprint and photo.photo_model_path().stat().st_mtime_ns == mtime


def big_jpeg(w: int = 4000, h: int = 3000) -> bytes:
    im = Image.fromarray(skdata.chelsea()).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_jpeg_queries_decode_at_reduced_size(encoder):
    raw = big_jpeg()
    full = folders.decode_image_bytes(raw)
    small = folders.decode_image_bytes(raw, draft_min_side=224)
    assert full.image.size == (4000, 3000) and small.full_size == (4000, 3000)
    assert min(small.image.size) >= 224 and small.image.size[0] <= 4000 // 4  # libjpeg's 1/8 scale: 500 x 375
    a, b = encoder.embed([full.image, small.image])
    assert float(a @ b) > 0.99  # the model reads 224 pixels either way
    boxed = folders.decode_image_bytes(raw, draft_min_side=224, box=(0, 0, 800, 600))
    assert boxed.image.size[0] * 800 / 4000 >= 224  # the crop keeps its 224 pixels


def test_exif_rotation_is_applied_and_sizes_follow_it():
    im = Image.fromarray(skdata.chelsea())  # 451 x 300
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    decoded = folders.decode_image_bytes(buf.getvalue(), draft_min_side=100)
    assert decoded.full_size == (300, 451) and decoded.image.size[1] > decoded.image.size[0]
