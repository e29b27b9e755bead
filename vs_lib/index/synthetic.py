"""SYNTHETIC clustered unit vectors, for measuring indexes beyond the real corpus.

Labelled *synthetic* wherever they are shown.  The model: ``n_clusters`` random unit
centres; a point is a centre plus a Gaussian offset of norm ≈ ``spread``, plus isotropic
noise of norm ≈ ``noise``, L2-normalised.  With ``intrinsic_dim=None`` the offset spreads
over all ``dim`` axes (isotropic blobs, as in notebook 04's pictures of the tree family);
with ``intrinsic_dim=r`` it lies in one shared random ``r``-dimensional subspace, like real
embeddings, whose intrinsic dimension is far below their 128 axes.  (Isotropic 128-d blobs
make every point of a cluster almost equidistant from every other, and "the true top-10"
meaningless at large N.)

``synthetic_stream`` yields the vectors in chunks (memory stays at one chunk, for 10M+);
``clustered_vectors`` returns them at once; ``synthetic_queries`` draws fresh points of the
same model.  Everything is deterministic for a ``seed``, and the chunk size changes only how
the same vectors are handed out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

__all__ = ["clustered_vectors", "synthetic_queries", "synthetic_stream"]

BLOCK = 8192  # rows drawn per random generator


def _model(dim: int, n_clusters: int, intrinsic_dim: int | None, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(centres (n_clusters, dim) unit rows, basis (r, dim) orthonormal rows or None)``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if intrinsic_dim is None:
        return centres, None
    basis = np.linalg.qr(rng.standard_normal((dim, intrinsic_dim)))[0].T.astype(np.float32)
    return centres, basis


def _sample(
    rng: np.random.Generator, centres: np.ndarray, basis: np.ndarray | None, m: int, spread: float, noise: float
) -> np.ndarray:
    dim = centres.shape[1]
    r = dim if basis is None else basis.shape[0]
    x = centres[rng.integers(0, len(centres), m)]
    offset = rng.standard_normal((m, r), dtype=np.float32) * np.float32(spread / math.sqrt(r))
    x += offset if basis is None else offset @ basis
    if noise:
        x += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(noise / math.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _blocks(
    seed: int, stream: int, n: int, centres: np.ndarray, basis: np.ndarray | None, spread: float, noise: float
) -> Iterator[np.ndarray]:
    """``n`` points in blocks of ``BLOCK`` rows, block ``b`` drawn from its own generator: the
    points do not depend on how a caller chunks them."""
    for b, s in enumerate(range(0, n, BLOCK)):
        yield _sample(np.random.default_rng([seed, stream, b]), centres, basis, min(BLOCK, n - s), spread, noise)


def synthetic_stream(
    n: int,
    dim: int = 128,
    *,
    n_clusters: int = 1000,
    spread: float = 0.6,
    intrinsic_dim: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    chunk: int = 250_000,
) -> Iterator[np.ndarray]:
    """Yield ``n`` synthetic clustered unit vectors in ``(<= chunk, dim)`` float32 chunks
    (the same vectors whatever ``chunk``)."""
    centres, basis = _model(dim, n_clusters, intrinsic_dim, seed)
    parts: list[np.ndarray] = []
    held = 0
    for block in _blocks(seed, 1, n, centres, basis, spread, noise):
        while len(block):
            take = block[: chunk - held]
            parts.append(take)
            held += len(take)
            block = block[len(take) :]
            if held == chunk:
                yield np.concatenate(parts)
                parts, held = [], 0
    if held:
        yield np.concatenate(parts)


def clustered_vectors(
    n: int,
    dim: int = 128,
    *,
    n_clusters: int = 1000,
    spread: float = 0.6,
    intrinsic_dim: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """``(n, dim)`` float32 synthetic clustered unit vectors: :func:`synthetic_stream` at once."""
    out = np.empty((n, dim), np.float32)
    s = 0
    stream = synthetic_stream(
        n, dim, n_clusters=n_clusters, spread=spread, intrinsic_dim=intrinsic_dim, noise=noise, seed=seed
    )
    for part in stream:
        out[s : s + len(part)] = part
        s += len(part)
    return out


def synthetic_queries(
    n: int,
    dim: int = 128,
    *,
    n_clusters: int = 1000,
    spread: float = 0.6,
    intrinsic_dim: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """``(n, dim)`` fresh draws of the model of ``synthetic_stream(seed=seed)`` (not in it)."""
    centres, basis = _model(dim, n_clusters, intrinsic_dim, seed)
    return np.concatenate([np.empty((0, dim), np.float32), *_blocks(seed, 2, n, centres, basis, spread, noise)])
