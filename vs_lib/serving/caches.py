"""In-memory caches the search path reads instead of recomputing: stored embeddings and perceptual hashes.

Both are keyed by image id and filled at most once per id (thread-safe). Neither knows
where pixels come from: the facade hands them a loader.

- :class:`VectorCache`: the embedding of an indexed image is already in the index — read it
  back with the index's public ``reconstruct(ids)``. Kinds that keep only compressed codes
  (``ivf``, ``ivfpq``, ``lsh``) cannot; then, and for an id the index lacks, the image is
  re-embedded from its pixels.
- :class:`HashCache`: perceptual hashes for the near-duplicate rule, computed in batches
  for the corpus at start-up and one by one for anything else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from ..index import VectorIndexError
from .hashing import perceptual_hash
from .neighbours import NeighbourService


class VectorCache:
    """Stored embeddings ``(d,)`` float32 by image id; ``embed_ids(ids) -> (n, d)`` is the fallback."""

    def __init__(self, neighbours: NeighbourService, embed_ids: Callable[[list[int]], np.ndarray], dim: int):
        self.neighbours = neighbours
        self.embed_ids = embed_ids
        self.dim = int(dim)
        self.can_reconstruct = True  # set False the first time the index says its kind cannot
        self._vectors: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def prefill(self, chunk: int = 50_000) -> int:
        """Read every stored vector once (36 MB at 70k x 128), so searches by id never wait for
        the index lock; returns how many were read (0 when the kind cannot reconstruct)."""
        all_ids = self.neighbours.ids().tolist()
        for s in range(0, len(all_ids), chunk):
            part = all_ids[s : s + chunk]
            got = self._reconstruct(part)
            if got is None:
                return 0
            self.put(part, got)
        return len(all_ids)

    def get(self, ids: Sequence[int]) -> np.ndarray:
        """``(n, d)`` float32 embeddings of ``ids``, in order (stored vectors where the index keeps them)."""
        ids = [int(i) for i in ids]
        missing = list(dict.fromkeys(i for i in ids if i not in self._vectors))
        if missing:
            got = self._reconstruct(missing)
            self.put(missing, got if got is not None else self.embed_ids(missing))
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._vectors[i] for i in ids])

    def put(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Remember ``vectors[j]`` as the embedding of ``ids[j]``."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        with self._lock:
            self._vectors.update(zip((int(i) for i in ids), vectors, strict=True))

    def _reconstruct(self, ids: list[int]) -> np.ndarray | None:
        """Stored vectors of ``ids`` from the index, or ``None`` when it cannot give them."""
        if not self.can_reconstruct:
            return None
        try:
            return self.neighbours.reconstruct(ids)
        except KeyError:  # an id the index lacks (e.g. a row not yet indexed): re-embed it
            return None
        except (VectorIndexError, NotImplementedError):  # the kind keeps no float vectors
            self.can_reconstruct = False
            return None


class HashCache:
    """Perceptual hashes (uint64) by image id; ``pixels(ids) -> [PIL image]`` loads what is missing."""

    def __init__(self, pixels: Callable[[list[int]], list[Image.Image]]):
        self.pixels = pixels
        self._hashes: dict[int, int] = {}
        self._lock = threading.Lock()

    def prefill(self, ids: Sequence[int], images: np.ndarray, chunk: int = 8192) -> None:
        """Hash ``images`` ``(n, H, W)`` uint8 in batches (one matrix product each) as the hashes of ``ids``."""
        for s in range(0, len(ids), chunk):
            self.put(ids[s : s + chunk], perceptual_hash(np.asarray(images[s : s + chunk])))

    def get(self, ids: Sequence[int]) -> np.ndarray:
        """``(n,)`` uint64 hashes of ``ids``, in order."""
        ids = [int(i) for i in ids]
        missing = list(dict.fromkeys(i for i in ids if i not in self._hashes))
        if missing:
            self.put(missing, perceptual_hash(self.pixels(missing)))
        return np.asarray([self._hashes[i] for i in ids], dtype=np.uint64)

    def put(self, ids: Sequence[int], hashes: np.ndarray) -> None:
        with self._lock:
            self._hashes.update(zip((int(i) for i in ids), np.asarray(hashes, dtype=np.uint64).tolist(), strict=True))
