"""Encoders: embedding shapes and norms on every input kind, save/load, refusal of bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vs_lib import features, models


@pytest.fixture(scope="module")
def encoder() -> models.Encoder:
    torch.manual_seed(0)
    arch = models.default_arch("cnn", widths=[8, 16], fc=[32], dim=16)
    return models.Encoder(models.build_network(arch), arch, name="tiny")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)


def _check(emb: np.ndarray, n: int, d: int) -> None:
    assert emb.shape == (n, d) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embed_arrays_of_every_layout(encoder, images):
    _check(encoder.embed(images), 20, encoder.dim)
    _check(encoder.embed(images[..., None]), 20, 16)
    _check(encoder.embed(np.repeat(images[..., None], 3, axis=-1)), 20, 16)
    _check(encoder.embed(np.random.default_rng(1).integers(0, 256, (3, 64, 48, 4), dtype=np.uint8)), 3, 16)
    _check(encoder.embed(np.zeros((0, 28, 28), np.uint8)), 0, 16)
    # batching does not change the result
    np.testing.assert_allclose(encoder.embed(images, batch_size=3), encoder.embed(images, batch_size=256), atol=1e-5)


@pytest.mark.parametrize("size", [(28, 28), (5, 7), (300, 200)])
def test_embed_every_pil_mode_and_size(encoder, size):
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    examples = features.mode_examples(rgb)
    emb = encoder.embed(list(examples.values()))
    _check(emb, len(features.PIL_MODES), 16)
    # an L image and the same image as RGB give the same embedding
    l_img = examples["L"]
    np.testing.assert_allclose(encoder.embed([l_img]), encoder.embed([l_img.convert("RGB")]), atol=1e-4)


def test_save_load_identical(encoder, images, tmp_path):
    encoder.metadata["note"] = "hello"
    path = encoder.save(tmp_path / "enc.pt")
    loaded = models.load_encoder(path)
    np.testing.assert_array_equal(loaded.embed(images), encoder.embed(images))
    assert loaded.fingerprint == encoder.fingerprint and loaded.metadata["note"] == "hello"
    assert loaded.dim == encoder.dim and loaded.name == "tiny"


def test_fingerprint_changes_with_weights(encoder):
    other = encoder.copy()
    with torch.no_grad():
        next(other.network.parameters()).add_(0.01)
    other.weights_changed()
    assert other.fingerprint != encoder.fingerprint


def test_corrupted_and_mismatched_files_refused(encoder, tmp_path):
    path = encoder.save(tmp_path / "enc.pt")
    raw = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(models.EncoderFileError, match="corrupted"):
        models.load_encoder(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    with pytest.raises(models.EncoderFileError):
        models.load_encoder(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="no encoder file"):
        models.load_encoder(tmp_path / "missing.pt")
    # weights that do not fit the recorded architecture
    payload = torch.load(path, weights_only=True)
    payload["arch"] = dict(payload["arch"], widths=[8, 32])
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(models.EncoderFileError, match="do not match the architecture"):
        models.load_encoder(tmp_path / "mismatch.pt")
    # weights changed after saving: fingerprint check
    payload = torch.load(path, weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key] = payload["state_dict"][key] + 1
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(models.EncoderFileError, match="fingerprint"):
        models.load_encoder(tmp_path / "tampered.pt")
    # something else saved with torch
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(models.EncoderFileError, match="not a vs_lib encoder"):
        models.load_encoder(tmp_path / "other.pt")


def test_baselines(images, tmp_path):
    pix = models.baseline_encoder("pixels")
    emb = pix.embed(images)
    _check(emb, 20, 784)
    z = (images.reshape(20, -1) / 255.0 - models.FASHION_MEAN) / models.FASHION_STD
    np.testing.assert_allclose(emb, z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)

    pca = models.baseline_encoder("pca", train_images=images, dim=8)
    e = pca.embed(images)
    _check(e, 20, 8)
    # the PCA projection matches scikit-learn's up to the sign of each component
    from sklearn.decomposition import PCA

    x = pca.preprocess(images).flatten(1).numpy().astype(np.float64)
    ref = PCA(8, svd_solver="full").fit_transform(x)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(e), np.abs(ref), atol=2e-3)
    loaded = models.load_encoder(pca.save(tmp_path / "pca.pt"))
    np.testing.assert_array_equal(loaded.embed(images), e)
    with pytest.raises(ValueError, match="train_images"):
        models.baseline_encoder("pca")

    un = models.baseline_encoder("untrained", seed=3)
    _check(un.embed(images), 20, 128)
    assert models.baseline_encoder("untrained", seed=3).fingerprint == un.fingerprint
    with pytest.raises(ValueError, match="unknown baseline"):
        models.baseline_encoder("vit")


@pytest.mark.slow
def test_efficientnet_baseline_embeds(images):
    eff = models.baseline_encoder("efficientnet", image_size=32)
    _check(eff.embed(images[:4]), 4, 1280)


def test_layer_shapes(encoder):
    rows = models.layer_shapes(encoder.network, (2, 1, 28, 28))
    assert rows[0]["output shape"] == (2, 8, 28, 28)
    assert rows[-1]["output shape"] == (2, 16)
    assert any(r["type"] == "MaxPool2d" and r["output shape"] == (2, 16, 7, 7) for r in rows)


class _ThreadSpy(torch.nn.Module):
    """Wraps a network and records torch's thread count each time it runs."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.net(x)


def test_embed_runs_on_the_threads_the_process_owner_set(encoder, images):
    spy = _ThreadSpy(encoder.network)
    enc = models.Encoder(spy, encoder.arch, name="spy")
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # what a server does once, at start-up (serve --torch-threads)
            spy.seen.clear()
            enc.embed(images, batch_size=8)
            assert spy.seen == [n] * 3 and torch.get_num_threads() == n  # during and after the call
        # a scoped setting, for a caller that opts in, is undone afterwards
        torch.set_num_threads(1)
        with models.torch_threads(2) as n:
            assert n == torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_encoders_fit_the_encoder_role(encoder):
    from vs_lib.protocols import Encoder

    assert isinstance(encoder, Encoder) and isinstance(models.baseline_encoder("pixels"), Encoder)
    assert not isinstance(object(), Encoder)
