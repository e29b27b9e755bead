"""The embedding generation service: untrusted input (+ optional crop) → validated image → embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..protocols import Encoder
from .images import MAX_PIXELS, MAX_UPLOAD_BYTES, CropSpec, apply_crop, decode_image, parse_crop, to_pil

ImageInput = bytes | bytearray | memoryview | Image.Image | np.ndarray


class EmbeddingService:
    """Preprocessing plus the trained encoder, with the upload limits it enforces."""

    def __init__(self, encoder: Encoder, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS):
        self.encoder = encoder
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    def prepare(self, image: ImageInput, crop: CropSpec = None) -> Image.Image:
        """Validate and decode ``image`` (bytes, PIL or uint8 array), honour EXIF rotation, normalise the mode, crop."""
        if isinstance(image, bytes | bytearray | memoryview):
            img = decode_image(bytes(image), max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        else:
            img = to_pil(image)
        return apply_crop(img, parse_crop(crop))

    def embed(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """``(n, d)`` float32 L2-normalised embeddings of prepared images (the encoder resizes them)."""
        emb = np.asarray(self.encoder.embed(list(images)), dtype=np.float32)
        if emb.shape != (len(images), self.encoder.dim):
            raise RuntimeError(f"encoder returned shape {emb.shape} for {len(images)} images of dim {self.encoder.dim}")
        return emb
