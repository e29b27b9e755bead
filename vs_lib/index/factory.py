"""Making and opening an index of any kind: the one place that maps a kind to its backend.

``create(dim, kind, ...)`` dispatches on ``kind``; ``load(path, ...)`` on the kind its
manifest names, after refusing an index built for another dimension or encoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .annoy_index import AnnoyIndex
from .base import BaseIndex, VectorIndex
from .faiss_index import FAISS_KINDS, FaissIndex
from .milvus import MilvusIndex
from .persistence import Manifest, OpenOptions
from .scann_index import ScannIndex
from .tree import TreeIndex

KINDS = (*FAISS_KINDS, "tree", "annoy", "scann", "milvus")  # and any FAISS index_factory string
BACKENDS: dict[str, type[BaseIndex]] = {
    "tree": TreeIndex,
    "annoy": AnnoyIndex,
    "scann": ScannIndex,
    "milvus": MilvusIndex,
}  # every other kind: FAISS

__all__ = ["BACKENDS", "KINDS", "backend", "create", "load"]


def backend(kind: str) -> type[BaseIndex]:
    """The class that implements ``kind`` (FAISS for its kinds and factory strings)."""
    return BACKENDS.get(kind, FaissIndex)


def create(
    dim: int, kind: str = "flat", metric: str = "ip", *, fingerprint: str | None = None, **params: Any
) -> VectorIndex:
    """A new, empty index of ``kind`` for ``dim``-dimensional vectors.

    ``kind``: one of :data:`KINDS` or a FAISS ``index_factory`` string; ``params``: that
    kind's build and search parameters (see :mod:`.faiss_index`, :mod:`.tree`,
    :mod:`.annoy_index`, :mod:`.scann_index`, :mod:`.milvus`);
    ``fingerprint``: the encoder's, saved in the manifest and checked by :func:`load`.
    """
    cls = backend(kind)
    if cls is FaissIndex:  # one class for every FAISS kind: the kind is an argument
        return FaissIndex(dim, kind, metric, fingerprint=fingerprint, **params)
    return cls(dim, metric, fingerprint=fingerprint, **params)


def load(
    path: str | os.PathLike[str],
    expected_dim: int | None = None,
    expected_fingerprint: str | None = None,
    *,
    mmap_vectors: bool = False,
    token: str | None = None,
) -> VectorIndex:
    """Open a saved index of any kind, verifying checksums, dimension and encoder fingerprint.

    Raises ``FileNotFoundError`` (nothing saved), ``IndexMismatchError`` (built for another
    dimension or encoder) or ``IndexCorruptedError`` (a checksum, a file or the manifest is
    bad).  ``mmap_vectors=True`` leaves the float vectors kept for re-ranking / the tree on
    disk; ``token``: the credential of a Milvus server.
    """
    folder = Path(path)
    manifest = Manifest.read(folder)
    manifest.check(folder, expected_dim, expected_fingerprint)
    return backend(manifest.kind).from_manifest(folder, manifest, OpenOptions(mmap_vectors=mmap_vectors, token=token))
