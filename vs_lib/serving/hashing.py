"""The perceptual hash (pHash) that catches exact and near-duplicate images, and Hamming distance.

Each image, as grayscale, is reduced to 32 × 32 by area averaging; the 8 × 8 lowest
frequencies of its 2-D DCT are compared with their median; bit = above the median. Both
steps are linear, so a batch of equal-sized images is hashed with two matrix products
(:func:`area_matrix`, :func:`dct_matrix`). Visually identical images (re-encoded, rescaled,
slightly brightened) differ in few of the 64 bits; unrelated images in about 32. Written
with NumPy only: the hash is part of the lesson.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .images import normalise_mode

HASH_SIZE = 32  # images are reduced to 32 x 32 by area averaging
HASH_LOW = 8  # the 8 x 8 lowest DCT frequencies give the 64 hash bits
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601 weights, as PIL's RGB -> L


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of area-averaging resampling (what PIL calls BOX)."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    i = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C`` (``C @ x`` is ``scipy.fft.dct(x, norm="ortho")``)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def perceptual_hash(images: np.ndarray | Image.Image | Sequence[Image.Image | np.ndarray]) -> np.ndarray:
    """64-bit DCT perceptual hashes, ``(n,)`` uint64, one per image.

    ``images``: a ``(n, H, W)`` / ``(H, W)`` array (one matrix product for the batch), or PIL
    image(s) / arrays of any sizes and modes (hashed one by one).
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = images[None]
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return _hash_batch(images)
    out = np.empty(len(images), dtype=np.uint64)
    for j, im in enumerate(images):
        out[j] = _hash_batch(_gray(im)[None])[0]
    return out


def _hash_batch(x: np.ndarray) -> np.ndarray:
    """Hashes of a ``(n, H, W)`` batch: area-average to 32 x 32, 8 x 8 low DCT, median bits (float32)."""
    x = np.asarray(x, dtype=np.float32)
    n, h, w = x.shape
    c = dct_matrix(HASH_SIZE)[:HASH_LOW]
    mh = (c @ area_matrix(h, HASH_SIZE)).astype(np.float32)  # (8, H)
    mw = (c @ area_matrix(w, HASH_SIZE)).astype(np.float32)  # (8, W)
    low = np.matmul(np.matmul(mh, x), mw.T).reshape(n, HASH_LOW * HASH_LOW)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def _gray(im: Image.Image | np.ndarray) -> np.ndarray:
    """One image as a float64 ``(H, W)`` grayscale matrix."""
    if isinstance(im, Image.Image):
        g = normalise_mode(im).convert("L").convert("F")
        f = min(g.size) // (2 * HASH_SIZE)
        if f >= 2:  # a big image: first an exact f x f block average (PIL's reduce), which is faster
            g = g.reduce(f)
        return np.asarray(g, dtype=np.float64)
    a = np.asarray(im, dtype=np.float64)
    if a.ndim == 3:
        a = a @ LUMA if a.shape[2] == 3 else a.mean(axis=2)
    return a


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Number of differing bits between uint64 hashes (broadcasts), int64."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)
