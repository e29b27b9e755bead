"""Feature engineering: from any image to the tensor the model reads.

The steps, in order, each a ``torchvision.transforms.v2`` transform so they
compose and run on whole batches:

1. consistent colour mode: every PIL mode (``1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F``)
   converted to the model's mode (:func:`to_mode`; transparency composited on white,
   16/32-bit and float rescaled to 0..255);
2. grayscale (the model's mode for Fashion-MNIST is ``L``, one channel);
3. resize to the model's fixed size (``28 x 28``);
4. scale pixels to ``[0, 1]``;
5. z-score: subtract the mean and divide by the standard deviation *of the training images*
   (:func:`fit_normalisation`).

:class:`Preprocess` bundles these with their statistics and turns uint8 arrays
``(n, H, W)`` / ``(n, H, W, C)`` or lists of PIL images into a float32 tensor
``(n, C, H, W)``.  It is saved inside every encoder file, so a model always sees the same
preprocessing it was trained with.

Augmentations for self-supervised views (:class:`BatchAugment`) are applied to whole
batches of preprocessed tensors at once (one affine warp per image via ``affine_grid``),
which is what lets a small CNN train at thousands of images per second on two cores.

Hand-crafted features: :func:`hog_features`, histograms of oriented gradients (edge
directions per small cell), a classic descriptor of shape; :func:`fit_pca`, the principal
components of a set of feature vectors (the one PCA of the library).

Helpers for the notebook: :func:`show_matrix` draws an image as the matrix of its values,
:func:`show_histogram` the distribution of its values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from .protocols import ImageBatch

# pictures of pixel values live in viz; notebook 02 draws them from here
from .viz import show_histogram as show_histogram
from .viz import show_matrix as show_matrix

PIL_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F")


class ImageInputError(ValueError):
    """An input that cannot be read as an image or a batch of images."""


# --------------------------------------------------------------------------- colour mode
def to_mode(image: Image.Image, mode: str = "L") -> Image.Image:
    """Convert a PIL image of any mode to ``mode`` (``"L"`` or ``"RGB"``).

    - transparency (``RGBA``, ``LA``, ``P`` with a transparent colour, ``RGB``/``L`` with a
      transparent colour key) is composited on white, as a product photo's background would be;
    - 16-bit / 32-bit integer (``I;16``, ``I``) and float (``F``) images are rescaled
      linearly from their own min..max to 0..255 (PIL's own conversion would clip);
    - ``CMYK``, ``P``, ``1`` go through PIL's conversion.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"target mode must be 'L' or 'RGB', got {mode!r}")
    if not isinstance(image, Image.Image):
        raise ImageInputError(f"expected a PIL.Image, got {type(image).__name__}")
    m = image.mode
    if m in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        image = Image.fromarray(np.round(scaled).astype(np.uint8))
        m = "L"
    if m == "P" or (m in ("RGB", "L") and "transparency" in image.info):  # palette, or a tRNS colour key
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        m = image.mode
    if m in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        m = "RGB"
    if m != mode:
        image = image.convert(mode)
    return image


def to_uint8_batch(images: ImageBatch, mode: str = "L") -> list[np.ndarray] | np.ndarray:
    """Any accepted input → uint8 ``(n, H, W, C)`` array (or a list of them when sizes differ).

    Accepts a uint8 array ``(n, H, W)`` / ``(n, H, W, C)`` with C in {1, 3, 4}, or a list /
    tuple of PIL images (any mode, any size) or of uint8 arrays ``(H, W)`` / ``(H, W, C)``.
    """
    channels = 1 if mode == "L" else 3
    if isinstance(images, Image.Image):
        raise ImageInputError("expected a batch: wrap a single image in a list, e.g. embed([image])")
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ImageInputError(f"expected a uint8 array, got dtype {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ImageInputError(f"expected shape (n, H, W) or (n, H, W, C) with C in 1/3/4, got {images.shape}")
        return _channels_to(images, channels)
    if isinstance(images, (list, tuple)):
        out = []
        for i, im in enumerate(images):
            if isinstance(im, Image.Image):
                a = np.asarray(to_mode(im, mode))
            elif isinstance(im, np.ndarray):
                if im.dtype != np.uint8 or im.ndim not in (2, 3):
                    raise ImageInputError(f"item {i}: expected uint8 (H, W) or (H, W, C), got {im.dtype} {im.shape}")
                a = im
            else:
                raise ImageInputError(f"item {i}: expected a PIL.Image or uint8 array, got {type(im).__name__}")
            if a.ndim == 2:
                a = a[..., None]
            out.append(_channels_to(a[None], channels)[0])
        if out and all(a.shape == out[0].shape for a in out):
            return np.stack(out)
        return out
    raise ImageInputError(f"expected a uint8 array or a list of PIL images, got {type(images).__name__}")


def _channels_to(a: np.ndarray, channels: int) -> np.ndarray:
    """(n, H, W, C) uint8 → (n, H, W, channels): drop alpha (on white), gray ↔ RGB."""
    c = a.shape[-1]
    if c == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.round(a[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        c = 3
    if c == channels:
        return a
    if channels == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
        g = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
        return np.round(g).clip(0, 255).astype(np.uint8)[..., None]
    return np.repeat(a, 3, axis=-1)


# --------------------------------------------------------------------------- geometry
GEOMETRIES = ("squash", "pad", "center_crop")
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_FRAMING_DEFAULTS: dict[str, Any] = {
    "geometry": "squash",
    "interpolation": "bilinear",
    "crop_fraction": 0.875,
    "fill": 255,
}


def pad_to_square(image: Image.Image, fill: int = 255) -> Image.Image:
    """``image`` centred on a square canvas of its longer side, filled with ``fill`` (white)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    colour: int | tuple[int, ...] = fill if image.mode == "L" else (fill,) * len(image.getbands())
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def center_crop_box(width: int, height: int, fraction: float = 0.875) -> tuple[int, int, int, int]:
    """The centred square of ``fraction`` of the shorter side, as a PIL box ``(left, top, right, bottom)``.

    TensorFlow's EfficientNet evaluation crop: side ``int(fraction * min(w, h))``, offsets
    rounded up (``(w - side + 1) // 2``).
    """
    side = max(1, int(fraction * min(width, height)))
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    return left, top, left + side, top + side


# --------------------------------------------------------------------------- statistics
def fit_normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of pixel values in [0, 1] over training images (uint8)."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    return float(x.mean()), float(x.std())


# --------------------------------------------------------------------------- the pipeline
@dataclass
class Preprocess:
    """The model's preprocessing, with its statistics (saved inside each encoder).

    ``size``: (H, W) the model reads; ``mode``: ``"L"`` or ``"RGB"``; ``mean``/``std``:
    z-score statistics (per channel, in [0, 1] units) from the training images.

    How an image of any shape becomes ``size`` (``geometry``, one of :data:`GEOMETRIES`):
    ``"squash"`` resizes it whatever its aspect ratio (the default, right for the square
    Fashion-MNIST images); ``"pad"`` first pads it to a square with ``fill`` (white), so an
    elongated object stays whole; ``"center_crop"`` first keeps the centred square of
    ``crop_fraction`` of the shorter side (ImageNet's evaluation crop, 224 of 256).  Any
    geometry but ``"squash"``, or an ``interpolation`` other than ``"bilinear"``, runs on PIL
    images one by one (:meth:`frame`), with PIL's resampling filter of that name.
    """

    size: tuple[int, int] = (28, 28)
    mode: str = "L"
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    antialias: bool = True
    geometry: str = "squash"
    interpolation: str = "bilinear"
    crop_fraction: float = 0.875
    fill: int = 255
    _compose: v2.Compose | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        h, w = (int(s) for s in self.size)
        self.size = (h, w)
        self.mean = tuple(float(m) for m in np.atleast_1d(self.mean))
        self.std = tuple(float(s) for s in np.atleast_1d(self.std))
        channels = 1 if self.mode == "L" else 3
        if len(self.mean) == 1 and channels == 3:
            self.mean, self.std = self.mean * 3, self.std * 3
        if self.mode not in ("L", "RGB") or len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"Preprocess: mode must be L or RGB with one mean/std per channel, got {self.mode} {self.mean} {self.std}"
            )
        if self.geometry not in GEOMETRIES or self.interpolation not in _RESAMPLING:
            raise ValueError(
                f"Preprocess: geometry must be one of {GEOMETRIES} and interpolation one of {sorted(_RESAMPLING)}, "
                f"got {self.geometry!r} and {self.interpolation!r}"
            )
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"Preprocess: crop_fraction must be in (0, 1], got {self.crop_fraction}")

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def steps(self) -> dict[str, v2.Transform]:
        """The tensor steps by name, in order (input: uint8 tensor (n, C, H, W))."""
        return {
            "resize": v2.Resize(self.size, antialias=self.antialias),
            "scale": v2.ToDtype(torch.float32, scale=True),
            "zscore": v2.Normalize(self.mean, self.std),
        }

    @property
    def transform(self) -> v2.Compose:
        if self._compose is None:
            self._compose = v2.Compose(list(self.steps().values()))
        return self._compose

    @property
    def per_image(self) -> bool:
        """True when images go through PIL one by one (:meth:`frame`) rather than as one tensor batch."""
        return self.geometry != "squash" or self.interpolation != "bilinear"

    def frame(self, image: Image.Image) -> Image.Image:
        """One PIL image → a PIL image of ``size`` in ``mode``: colour mode, then ``geometry``, then resize."""
        im = to_mode(image, self.mode)
        if self.geometry == "pad":
            im = pad_to_square(im, self.fill)
        elif self.geometry == "center_crop":
            im = im.crop(center_crop_box(*im.size, self.crop_fraction))
        h, w = self.size
        if im.size != (w, h):
            im = im.resize((w, h), _RESAMPLING[self.interpolation])
        return im

    def _per_image(self, images: ImageBatch) -> torch.Tensor:
        if isinstance(images, (list, tuple)) and all(isinstance(im, Image.Image) for im in images):
            pils: list[Image.Image] = list(images)
        else:
            batch = to_uint8_batch(images, self.mode)
            pils = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in batch]
        h, w = self.size
        out = np.empty((len(pils), h, w, self.channels), dtype=np.uint8)
        for i, im in enumerate(pils):
            a = np.asarray(self.frame(im))
            out[i] = a[..., None] if a.ndim == 2 else a
        t = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
        return v2.functional.normalize(t, list(self.mean), list(self.std))

    def __call__(self, images: ImageBatch) -> torch.Tensor:
        """Images → float32 tensor ``(n, C, H, W)``, z-scored."""
        if self.per_image:
            return self._per_image(images)
        batch = to_uint8_batch(images, self.mode)
        if isinstance(batch, list):  # mixed sizes: resize one by one
            if not batch:
                return torch.zeros((0, self.channels, *self.size))
            return torch.cat([self(b[None]) for b in batch])
        t = torch.from_numpy(np.array(batch, copy=True)).permute(0, 3, 1, 2)
        if tuple(t.shape[-2:]) == self.size:  # skip the no-op resize (speed)
            t = t.float().div_(255.0)
            return v2.functional.normalize(t, list(self.mean), list(self.std))
        return self.transform(t)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_compose")
        d["size"], d["mean"], d["std"] = list(self.size), list(self.mean), list(self.std)
        for key, default in _FRAMING_DEFAULTS.items():  # written only when set: older files stay identical
            if d[key] == default:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            size=tuple(d["size"]),
            mode=d["mode"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            antialias=d.get("antialias", True),
            **{key: d.get(key, default) for key, default in _FRAMING_DEFAULTS.items()},
        )

    def invert(self, x: torch.Tensor) -> np.ndarray:
        """Undo the z-score: tensor (n, C, H, W) → uint8 (n, H, W) or (n, H, W, 3) for display."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        a = ((x.detach().cpu() * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        return a[..., 0] if a.shape[-1] == 1 else a


# --------------------------------------------------------------------------- augmentation
@dataclass
class BatchAugment:
    """Random views of a batch of preprocessed images ``(n, C, H, W)``, all on tensors.

    One affine warp per image (random resized crop of ``crop_scale`` of the area with
    aspect ratio in ``ratio``, horizontal flip with probability ``flip``, rotation up to
    ``rotate`` degrees, translation up to ``translate`` of the side), then brightness /
    contrast jitter (multiplicative/additive in z-score units), then random erasing of
    one rectangle (probability ``erase``, area ``erase_scale``).  Setting a field to
    0 / (1, 1) switches that augmentation off (used in the notebook to show each alone).

    Out-of-image areas are filled with the background value ``fill`` (in z-score units,
    i.e. the value of a black pixel for Fashion-MNIST's black background).
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (0.75, 1.333)
    flip: float = 0.5
    rotate: float = 10.0
    translate: float = 0.0
    brightness: float = 0.3
    contrast: float = 0.3
    erase: float = 0.3
    erase_scale: tuple[float, float] = (0.02, 0.15)
    fill: float = 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Views of ``x`` (n, C, H, W): affine warp, then exposure jitter, then erasing.

        ``generator`` makes the views reproducible (the same generator state, the same views).
        """
        if x.shape[0] == 0:
            return x
        out = self._warp(x, generator)
        out = self._jitter(out, generator)
        return self._erase(out, generator)

    def _warp(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """One random affine map per image: crop (scale + aspect), flip, rotation, translation."""
        n = x.shape[0]
        lo, hi = self.crop_scale
        area = lo + (hi - lo) * torch.rand(n, generator=g)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        r = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, generator=g))
        sx = torch.sqrt(area * r).clamp(max=1.0)  # crop width as a fraction of the image
        sy = torch.sqrt(area / r).clamp(max=1.0)
        cx = (1 - sx) * (2 * torch.rand(n, generator=g) - 1)  # crop centre, keeps the crop inside the image
        cy = (1 - sy) * (2 * torch.rand(n, generator=g) - 1)
        if self.translate:
            cx = cx + self.translate * 2 * (2 * torch.rand(n, generator=g) - 1)
            cy = cy + self.translate * 2 * (2 * torch.rand(n, generator=g) - 1)
        angle = torch.deg2rad(self.rotate * (2 * torch.rand(n, generator=g) - 1))
        flip = torch.where(torch.rand(n, generator=g) < self.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * sx * flip
        theta[:, 0, 1] = -sin * sy
        theta[:, 1, 0] = sin * sx * flip
        theta[:, 1, 1] = cos * sy
        theta[:, 0, 2] = cx
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        warped = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped + self.fill

    def _jitter(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """Contrast (scaled around each image's mean), then brightness (an offset), in z-score units."""
        n = x.shape[0]
        if self.contrast:
            c = 1 + self.contrast * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * c + mean
        if self.brightness:
            x = x + self.brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
        return x

    def _erase(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """One rectangle per selected image (probability ``erase``) filled with the background."""
        if not self.erase:
            return x
        n, (H, W) = x.shape[0], x.shape[-2:]
        a = self.erase_scale[0] + (self.erase_scale[1] - self.erase_scale[0]) * torch.rand(n, generator=g)
        asp = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(n, generator=g))
        eh = (torch.sqrt(a * asp) * H).clamp(1, H)
        ew = (torch.sqrt(a / asp) * W).clamp(1, W)
        y0 = (torch.rand(n, generator=g) * (H - eh)).view(-1, 1, 1)
        x0 = (torch.rand(n, generator=g) * (W - ew)).view(-1, 1, 1)
        ys = torch.arange(H).view(1, H, 1)
        xs = torch.arange(W).view(1, 1, W)
        box = (ys >= y0) & (ys < y0 + eh.view(-1, 1, 1)) & (xs >= x0) & (xs < x0 + ew.view(-1, 1, 1))
        box = box & (torch.rand(n, generator=g) < self.erase).view(-1, 1, 1)
        return torch.where(box[:, None], torch.full_like(x, self.fill), x)

    def only(self, name: str) -> BatchAugment:
        """A copy with every augmentation off except ``name`` (for showing each alone)."""
        off = dict(
            crop_scale=(1.0, 1.0),
            ratio=(1.0, 1.0),
            flip=0.0,
            rotate=0.0,
            translate=0.0,
            brightness=0.0,
            contrast=0.0,
            erase=0.0,
        )
        keep = {
            "crop": ("crop_scale", "ratio"),
            "flip": ("flip",),
            "rotate": ("rotate",),
            "translate": ("translate",),
            "brightness": ("brightness",),
            "contrast": ("contrast",),
            "erase": ("erase", "erase_scale"),
        }
        if name not in keep:
            raise ValueError(f"unknown augmentation {name!r}; expected one of {sorted(keep)}")
        params = {**asdict(self), **off}
        for k in keep[name]:
            params[k] = getattr(self, k)
        if name == "flip":
            params["flip"] = 1.0
        if name == "erase":
            params["erase"] = 1.0
        return BatchAugment(**params)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


AUGMENTATIONS = ("crop", "flip", "rotate", "translate", "brightness", "contrast", "erase")


# --------------------------------------------------------------------------- hand-crafted features
def hog_features(images: np.ndarray, cell: int = 4, orientations: int = 9, chunk: int = 4096) -> np.ndarray:
    """(n, d) float32, L2-normalised HOG descriptors of grayscale uint8 images ``(n, H, W)``.

    Histograms of oriented gradients (Dalal & Triggs 2005), as scikit-image's ``hog`` with
    ``pixels_per_cell=(cell, cell)``, ``cells_per_block=(2, 2)``, ``block_norm="L2-Hys"``:
    central-difference gradients; each pixel votes its gradient magnitude into one of
    ``orientations`` unsigned direction bins of its cell; each 2 x 2 block of cells is
    L2-normalised, clipped at 0.2 and normalised again.  Computed for whole batches with
    tensor operations (about 100x faster than calling ``hog`` per image; the tests compare
    the two).  A description of edges and outline that ignores overall brightness.
    """
    a = np.asarray(images)
    if a.ndim != 3:
        raise ValueError(f"hog_features needs grayscale images (n, H, W), got shape {a.shape}")
    n, H, W = a.shape
    ch, cw = H // cell, W // cell
    if ch < 2 or cw < 2:
        raise ValueError(f"images of {H} x {W} are too small for 2 x 2 blocks of {cell}-pixel cells")
    out = np.empty((n, (ch - 1) * (cw - 1) * 4 * orientations), dtype=np.float32)
    eps2 = 1e-10
    with torch.inference_mode():
        for s in range(0, n, chunk):
            x = torch.tensor(a[s : s + chunk], dtype=torch.float64)
            g_row, g_col = torch.zeros_like(x), torch.zeros_like(x)
            g_row[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
            g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
            angle = torch.remainder(torch.rad2deg(torch.atan2(g_row, g_col)), 180.0)
            bins = torch.clamp(torch.floor(angle / (180.0 / orientations)).long(), 0, orientations - 1)
            votes = torch.zeros(*x.shape, orientations, dtype=torch.float64)
            votes.scatter_(3, bins.unsqueeze(3), torch.hypot(g_row, g_col).unsqueeze(3))
            cells = votes[:, : ch * cell, : cw * cell].reshape(len(x), ch, cell, cw, cell, orientations)
            cells = cells.sum((2, 4)) / (cell * cell)
            # blocks of 2 x 2 cells, laid out (block row, block col, cell row, cell col, bin) like scikit-image
            blocks = torch.stack(
                [torch.stack([cells[:, r : r + ch - 1, c : c + cw - 1] for c in (0, 1)], 3) for r in (0, 1)], 3
            ).reshape(len(x), ch - 1, cw - 1, -1)
            blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps2)
            blocks = torch.clamp(blocks, max=0.2)
            blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps2)
            out[s : s + len(x)] = blocks.reshape(len(x), -1).numpy()
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
    return out


# --------------------------------------------------------------------------- principal components
@dataclass(frozen=True)
class PCAFit:
    """Principal axes of a set of rows, by decreasing variance.

    ``mean`` (d,) float32; ``components`` (dim, d) float32, one unit-length axis per row;
    ``explained_variance_ratio`` (dim,): the share of the total variance along each axis.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, d) rows → (n, dim) float32 coordinates on the principal axes."""
        centred = np.asarray(x, dtype=np.float32) - self.mean
        return np.asarray(centred @ self.components.T, dtype=np.float32)


def fit_pca(x: np.ndarray, dim: int) -> PCAFit:
    """The top ``dim`` principal components of the rows of ``x`` (n, d).

    scikit-learn's PCA with the exact covariance solver (an eigendecomposition of the
    d x d covariance matrix, cheap when d is a few hundred or thousand); every PCA of the
    library goes through here: the PCA baseline encoder and the label-free features whose
    neighbours become self-supervised positives.
    """
    from sklearn.decomposition import PCA

    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or not 1 <= dim <= min(a.shape):
        raise ValueError(f"fit_pca needs (n, d) rows and 1 <= dim <= min(n, d), got shape {a.shape} and dim={dim}")
    pca = PCA(n_components=int(dim), svd_solver="covariance_eigh").fit(a)
    return PCAFit(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64),
    )


# --------------------------------------------------------------------------- pictures
def mode_examples(image: Image.Image) -> dict[str, Image.Image]:
    """The same RGB image in every PIL mode of :data:`PIL_MODES` (for tests and the notebook)."""
    rgb = image.convert("RGB")
    gray = np.asarray(rgb.convert("L"))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(64, 255, rgb.size[0]).astype(np.uint8), (rgb.size[1], 1))))
    return {
        "1": rgb.convert("1"),
        "L": rgb.convert("L"),
        "P": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "RGB": rgb,
        "RGBA": rgba,
        "LA": rgba.convert("LA"),
        "CMYK": rgb.convert("CMYK"),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "I": Image.fromarray(gray.astype(np.int32) * 1000),
        "F": Image.fromarray(gray.astype(np.float32) / 255.0),
    }
