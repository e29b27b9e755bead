"""The search facade: one :class:`SearchService` composing the services into the two pipelines.

- **prediction**: validate → embed (:class:`EmbeddingService`) → nearest neighbours
  (:class:`NeighbourService`) → re-ranking (:class:`ReRanker`), timed per stage, widening
  the candidate list within a bound and a deadline (:class:`CandidateSearch`);
- **indexing**: validate → embed → object file → images row + vector (one transaction: the
  upload exists from here) → searchable in memory. The index on disk is a snapshot written
  in the background (:class:`Snapshotter`); at start-up the service replays what is newer.

The HTTP app, notebook 08 and the online simulation all call this class, so there is one
search path (one place to fix a privacy bug). Its ``user_id`` arguments are the *requester*,
which the caller has established (the HTTP app: from the credential), never a claim.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import config, data, database
from .. import index as index_mod
from ..index import VectorIndex
from ..locks import Presence
from ..protocols import Encoder
from .caches import HashCache, VectorCache
from .candidates import CandidateSearch
from .embedding import EmbeddingService, ImageInput
from .errors import NotFound, ServingError, as_int
from .images import MAX_PIXELS, MAX_UPLOAD_BYTES, CropSpec, apply_crop, encode_png, parse_crop, to_pil
from .indexing import Forbidden, IndexingPipeline
from .neighbours import NeighbourService, ensure_index
from .rerank import DUP_COSINE, DUP_HAMMING, ReRanker
from .responses import Health, SearchResponse, StageTimer
from .snapshots import SNAPSHOT_EVERY, SNAPSHOT_SECONDS, Snapshotter
from .store import PlatformStore

MAX_K = 100  # largest k a caller may ask for
MAX_CANDIDATES = 2048  # the most candidates one search examines, however many the filters drop
DEADLINE_MS = 2000.0  # no further widening of the candidate list once a search has taken this long
MAX_RANDOM = 200  # largest n of random_ids
log = logging.getLogger(__name__)


class SearchService(IndexingPipeline):
    """The one search path over ``encoder`` and ``index`` (the embeddings of the database's images).

    ``index_path``: where snapshots of the index go (``None``: never saved); ``db_path``,
    ``store_dir``: the platform database and object store (defaults from ``config``);
    ``dup_cosine`` / ``dup_hamming``: the re-ranker's duplicate rules; ``max_candidates``,
    ``deadline_ms``: the bounds of one search; ``snapshot_every`` / ``snapshot_seconds``: how
    often the background thread saves; ``prefill``: read the stored vectors and hash the
    corpus at start-up, so the first searches are as fast as the rest.
    """

    def __init__(
        self,
        encoder: Encoder,
        index: VectorIndex,
        *,
        db_path: str | os.PathLike[str] | None = None,
        index_path: str | os.PathLike[str] | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        dup_cosine: float | None = DUP_COSINE,
        dup_hamming: int | None = DUP_HAMMING,
        max_k: int = MAX_K,
        max_candidates: int = MAX_CANDIDATES,
        deadline_ms: float = DEADLINE_MS,
        max_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PIXELS,
        snapshot_every: int = SNAPSHOT_EVERY,
        snapshot_seconds: float = SNAPSHOT_SECONDS,
        prefill: bool = True,
    ):
        self.encoder = encoder
        self.embedder = EmbeddingService(encoder, max_bytes=max_bytes, max_pixels=max_pixels)
        self.neighbours = NeighbourService(index, index_path)
        self.store = PlatformStore(db_path, store_dir)
        self.max_k = int(max_k)
        self.vectors = VectorCache(self.neighbours, lambda ids: self.embedder.embed(self._images(ids)), encoder.dim)
        self.hashes = HashCache(self._images)
        bounds = max(int(max_candidates), self.max_k), float(deadline_ms)
        rules = ReRanker(dup_cosine, dup_hamming)
        self.candidates = CandidateSearch(self.neighbours, rules, self.store, self.vectors, self.hashes, *bounds)
        self._write_lock = threading.Lock()  # one upload / deletion / reconciliation at a time (short)
        self.presence = Presence(self.store.store_dir).hold()
        self.orphans_removed = self.store.remove_orphans() if self.presence.alone() else 0
        if prefill:
            self.vectors.prefill()
            for ids, images in self.store.corpus_batches():
                self.hashes.prefill(ids, images)
        self.snapshots = Snapshotter(self.snapshot, every=snapshot_every, seconds=snapshot_seconds)

    @classmethod
    def from_paths(
        cls,
        model_path: str | os.PathLike[str],
        *,
        index_kind: str = "flat",
        db_path: str | os.PathLike[str] | None = None,
        index_path: str | os.PathLike[str] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> SearchService:
        """Load the encoder, upgrade the database, bring the index up to date (:func:`ensure_index`:
        the saved snapshot plus every row newer than it, with its stored vector), serve."""
        from .. import models  # torch: imported when a service is built, not with the package

        encoder = models.load_encoder(Path(model_path))
        db_path = Path(db_path) if db_path is not None else config.db_path()
        database.upgrade(db_path)
        index_path = index_path or index_mod.default_index_path(encoder.name, kind=index_kind)
        with contextlib.closing(data.connect(db_path)) as conn:
            ensure_index(encoder, index_path, kind=index_kind, conn=conn, progress=progress)
        vindex = index_mod.load(index_path, expected_dim=encoder.dim, expected_fingerprint=encoder.fingerprint)
        return cls(encoder, vindex, db_path=db_path, index_path=index_path, **kwargs)

    @property
    def reranker(self) -> ReRanker:
        """The re-ranking rules of every search; assign another :class:`ReRanker` to change them."""
        return self.candidates.reranker

    @reranker.setter
    def reranker(self, rules: ReRanker) -> None:
        self.candidates.reranker = rules

    # ------------------------------------------------------------------ images
    def _images(self, ids: Sequence[int]) -> list[Image.Image]:
        return [to_pil(a) for a in self.store.pixels(ids)]

    def load_image(self, image_id: int) -> np.ndarray:
        """Pixels of any image, by its storage key (no visibility check: for notebooks and caches)."""
        return self.store.pixels([image_id])[0]

    def get_image(self, image_id: int, user_id: int | None = None) -> Image.Image:
        """The image as PIL; ``NotFound`` for an unknown id and for an image the requester may not see."""
        return to_pil(self.store.open(image_id, user_id))

    def image_png(self, image_id: int, user_id: int | None = None, size: int | None = None) -> bytes:
        """PNG bytes of a visible image, optionally scaled so that its longer side is ``size``."""
        return encode_png(self.get_image(image_id, user_id), size)

    def random_ids(self, n: int = 12, user_id: int | None = None, seed: int | None = None) -> list[int]:
        """Up to ``n`` random indexed images the requester may see as results (for a picker)."""
        if not 1 <= int(n) <= MAX_RANDOM:
            raise ServingError(f"n must be between 1 and {MAX_RANDOM}, got {n}")
        return self.store.random_visible(self.neighbours.ids(), int(n), user_id, seed)

    # ------------------------------------------------------------------ the prediction pipeline
    def search(
        self,
        image: ImageInput | None = None,
        *,
        image_id: int | None = None,
        crop: CropSpec = None,
        k: int = 10,
        user_id: int | None = None,
    ) -> SearchResponse:
        """Rank the images most similar to ``image`` (bytes/PIL/array) or to platform image ``image_id``.

        ``crop`` (``x0,y0,x1,y1`` pixels of the original) restricts the query to a rectangle.
        ``user_id`` is the requester: their own private images may appear, nobody else's.
        Returns up to ``k`` results — fewer when the filters left fewer among the candidates
        the search may examine (``max_candidates``, the index, the deadline; the response's
        ``stop_reason`` says which) — and the milliseconds of ``validate``, ``embed``,
        ``search``, ``rerank``, ``total``.
        """
        timer = StageTimer()
        k = as_int(k, "k")
        if not 1 <= k <= self.max_k:
            raise ServingError(f"k must be between 1 and {self.max_k}, got {k}")
        if (image is None) == (image_id is None):
            raise ServingError("give exactly one of an image file or an image_id")
        self.store.check_user(user_id)
        query, query_id = self._query_vector(image, image_id, parse_crop(crop), user_id, timer)
        timer.lap("embed")
        return self.candidates.rank(query, k, user_id, query_id, timer)

    def _query_vector(
        self, image: ImageInput | None, image_id: int | None, box: Any, user_id: int | None, timer: StageTimer
    ) -> tuple[np.ndarray, int | None]:
        """The query's ``(d,)`` embedding and, for a platform image, its id (its copies are then dropped)."""
        if image is not None:  # a file: validate, decode, crop, embed
            img = self.embedder.prepare(image, box)
            timer.lap("validate")
            return self.embedder.embed([img])[0], None
        query_id = as_int(image_id, "image_id")
        self.store.visible(query_id, user_id)
        if box is None:  # its stored vector, no network pass
            timer.lap("validate")
            return self.vectors.get([query_id])[0], query_id
        img = apply_crop(self.get_image(query_id, user_id), box)
        timer.lap("validate")
        return self.embedder.embed([img])[0], query_id

    def search_ids(self, query_image_id: int, k: int, user_id: int | None) -> list[int]:
        """Ranked ids for a platform query image: the ``(query_image_id, k, user_id)`` callable the
        online simulation expects."""
        return self.search(image_id=query_image_id, k=k, user_id=user_id).ids

    # ------------------------------------------------------------------ status
    def health(self) -> Health:
        """Status for ``GET /health``: no personal field, only the service's own figures."""
        return Health(
            status="ok",
            images_indexed=len(self.neighbours),
            model=str(getattr(self.encoder, "name", "encoder")),
            fingerprint=str(self.encoder.fingerprint),
            dim=int(self.encoder.dim),
            index_kind=str(self.neighbours.index.kind),
        )

    def close(self) -> None:
        """Write a last snapshot, stop the background thread, close the database connections."""
        snaps = getattr(self, "snapshots", None)
        if snaps is not None:
            snaps.close(final=True)
        self.presence.release()
        self.store.close()


__all__ = ["DEADLINE_MS", "MAX_CANDIDATES", "MAX_K", "Forbidden", "NotFound", "SearchService"]
