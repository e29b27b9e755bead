"""From untrusted bytes to a clean PIL image: validation limits, decoding, EXIF, mode, crop.

Order of checks in :func:`decode_image`: empty → byte limit → format → pixel count (read
from the header, before any pixel is decoded, so a small file that claims 50,000 × 50,000
pixels costs nothing) → full decode (catches truncation) → EXIF orientation applied →
colour mode normalised to ``L`` or ``RGB``.

A crop box is ``(x0, y0, x1, y1)`` in pixels of the image as displayed (after EXIF
rotation), ``x1``/``y1`` exclusive, like ``PIL.Image.crop``.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLarge, InvalidImage, NotAnImage, ServingError

MAX_UPLOAD_BYTES = 10 * 2**20  # 10 MiB per uploaded file
MAX_PIXELS = 40_000_000  # decompression-bomb guard: refuse larger images before decoding
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
FORMATS = "JPEG, PNG, GIF, BMP, TIFF or WebP"

CropBox = tuple[int, int, int, int]
CropSpec = str | Sequence[float] | None


def decode_image(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Validate and decode uploaded bytes into a PIL image in mode ``L`` or ``RGB``.

    Raises :class:`InvalidImage` (empty, corrupt, truncated), :class:`NotAnImage` (not a
    format Pillow reads) or :class:`ImageTooLarge` (over ``max_bytes`` or ``max_pixels``).
    """
    if not data:
        raise InvalidImage(f"empty file (0 bytes): expected a {FORMATS} image")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"upload of {len(data):,} bytes exceeds the limit of {max_bytes:,} bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image refused by the decompression-bomb guard: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise NotAnImage(f"not an image Pillow can read (expected {FORMATS})") from e
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidImage(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"image of {w}x{h} = {w * h:,} pixels exceeds the decompression-bomb guard of {max_pixels:,} pixels"
        )
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image refused by the decompression-bomb guard: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        raise InvalidImage(f"corrupt or truncated image data ({img.format or 'unknown format'}): {e}") from None
    oriented: Image.Image = img
    with contextlib.suppress(Exception):  # a broken EXIF block must not sink a fine image: keep it unrotated
        oriented = ImageOps.exif_transpose(img)
    return normalise_mode(oriented)


def normalise_mode(img: Image.Image) -> Image.Image:
    """Any PIL mode → ``L`` (single-channel modes) or ``RGB`` (everything else).

    Delegates to :func:`vs_lib.features.to_mode`, the project's one colour-mode conversion:
    transparency composited on white, 16/32-bit and float images rescaled (not clipped),
    palette and CMYK through RGB.
    """
    if img.mode in ("L", "RGB"):
        return img
    from .. import features  # imported on first use: it brings torch, which `serve --help` need not load

    return features.to_mode(img, "L" if img.mode in GRAY_MODES else "RGB")


def to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image (mode L/RGB) from a PIL image or a uint8 ``(H, W)`` / ``(H, W, C)`` array."""
    if isinstance(image, Image.Image):
        return normalise_mode(image)
    a = np.asarray(image)
    if a.ndim not in (2, 3) or a.size == 0:
        raise InvalidImage(f"expected an image array of shape (H, W) or (H, W, C), got {a.shape}")
    if a.dtype != np.uint8:
        raise InvalidImage(f"expected a uint8 image array, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return normalise_mode(Image.fromarray(a))


def parse_crop(crop: CropSpec) -> CropBox | None:
    """``"x0,y0,x1,y1"`` (commas or spaces) or a 4-sequence → integer box; ``None`` / ``""`` → no crop."""
    if crop is None:
        return None
    if isinstance(crop, str):
        text = crop.strip()
        if not text:
            return None
        parts: list[str | float] = [p for p in text.replace(" ", ",").split(",") if p != ""]
    else:
        parts = list(crop)
    expected = f"crop must be four numbers x0,y0,x1,y1 in pixels, got {crop!r}"
    if len(parts) != 4:
        raise ServingError(expected)
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ServingError(expected) from None
    if not all(np.isfinite(values)):
        raise ServingError(f"crop values must be finite, got {crop!r}")
    x0, y0, x1, y1 = (round(v) for v in values)
    return x0, y0, x1, y1


def apply_crop(img: Image.Image, box: CropBox | None) -> Image.Image:
    """Crop ``img`` to ``box`` after checking that the box is non-empty and inside the image."""
    if box is None:
        return img
    x0, y0, x1, y1 = box
    w, h = img.size
    if x1 <= x0 or y1 <= y0:
        raise ServingError(f"crop {box} is empty: need x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ServingError(
            f"crop {box} lies outside the image of {w}x{h} pixels (need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
        )
    return img.crop(box)


def encode_png(img: Image.Image, size: int | None = None) -> bytes:
    """PNG bytes of ``img``, scaled so that its longer side is ``size`` pixels (8..1024) when given.

    Enlarging keeps hard pixel edges (nearest neighbour); shrinking averages (box filter).
    """
    if size is not None:
        if not 8 <= int(size) <= 1024:
            raise ServingError(f"size must be between 8 and 1024 pixels, got {size}")
        w, h = img.size
        s = int(size) / max(w, h)
        resample = Image.Resampling.NEAREST if s >= 1 else Image.Resampling.BOX
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
