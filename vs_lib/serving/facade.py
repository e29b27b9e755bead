"""The search facade: one :class:`SearchService` composing the services into the two pipelines.

- **prediction**: validate → embed (:class:`EmbeddingService`) → nearest neighbours
  (:class:`NeighbourService`) → re-ranking (:class:`ReRanker`), timed per stage;
- **indexing**: validate → object store + images row → embed → index add → save index →
  commit, all or nothing.

The HTTP app, notebook 08 and the online simulation all call this class, so there is one
search path (one place to fix a privacy bug).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import config, data
from .. import index as index_mod
from ..index import VectorIndex
from ..protocols import Encoder
from .access import hidden_reason
from .caches import HashCache, VectorCache
from .embedding import EmbeddingService, ImageInput
from .errors import ServingError
from .hashing import perceptual_hash
from .images import MAX_PIXELS, MAX_UPLOAD_BYTES, CropSpec, apply_crop, encode_png, parse_crop, to_pil
from .neighbours import NeighbourService, ensure_index
from .rerank import DUP_COSINE, DUP_HAMMING, ReRanker
from .responses import Health, SearchResponse, StageTimer, UploadResult
from .store import PlatformStore

MAX_K = 100  # largest k a caller may ask for
MAX_TAGS_CHARS = 500
MAX_RANDOM = 200  # largest n of random_ids


def _as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ServingError(f"{name} must be an integer, got {value!r}") from None


class SearchService:
    """The one search path over ``encoder`` and ``index`` (the embeddings of the database's images).

    ``index_path``: where uploads persist the index (``None``: never saved); ``db_path``,
    ``store_dir``: the platform database and object store (defaults from ``config``);
    ``dup_cosine`` / ``dup_hamming``: the re-ranker's duplicate rules; ``prefill``: read the
    stored vectors and hash the corpus at start-up, so the first searches are as fast as the rest.
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
        max_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PIXELS,
        prefill: bool = True,
    ):
        self.encoder = encoder
        self.embedder = EmbeddingService(encoder, max_bytes=max_bytes, max_pixels=max_pixels)
        self.neighbours = NeighbourService(index, index_path)
        self.reranker = ReRanker(dup_cosine, dup_hamming)
        self.store = PlatformStore(db_path, store_dir)
        self.max_k = int(max_k)
        self.vectors = VectorCache(self.neighbours, lambda ids: self.embedder.embed(self._images(ids)), encoder.dim)
        self.hashes = HashCache(self._images)
        self._upload_lock = threading.Lock()
        if prefill:
            self.vectors.prefill()
            for ids, images in self.store.corpus_batches():
                self.hashes.prefill(ids, images)

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
        """Load the encoder, bring its index up to date with the database (:func:`ensure_index`), serve."""
        from .. import models  # torch: imported when a service is built, not with the package

        encoder = models.load_encoder(Path(model_path))
        db_path = Path(db_path) if db_path is not None else config.db_path()
        index_path = index_path or index_mod.default_index_path(encoder.name, kind=index_kind)
        with contextlib.closing(data.connect(db_path)) as conn:
            ensure_index(encoder, index_path, kind=index_kind, conn=conn, progress=progress)
        vindex = index_mod.load(index_path, expected_dim=encoder.dim, expected_fingerprint=encoder.fingerprint)
        return cls(encoder, vindex, db_path=db_path, index_path=index_path, **kwargs)

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
        self.store.check_user(user_id)
        all_ids = self.neighbours.ids()
        if len(all_ids) == 0:
            return []
        pick = np.random.default_rng(seed).choice(all_ids, size=min(len(all_ids), 4 * int(n)), replace=False).tolist()
        meta = self.store.image_meta(pick)
        return [i for i in pick if hidden_reason(meta.get(i), user_id, as_result=True) is None][: int(n)]

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
        Returns up to ``k`` results (fewer only when the whole index has fewer eligible images)
        and the milliseconds of ``validate``, ``embed``, ``search``, ``rerank``, ``total``.
        """
        timer = StageTimer()
        k = _as_int(k, "k")
        if not 1 <= k <= self.max_k:
            raise ServingError(f"k must be between 1 and {self.max_k}, got {k}")
        if (image is None) == (image_id is None):
            raise ServingError("give exactly one of an image file or an image_id")
        self.store.check_user(user_id)
        box = parse_crop(crop)
        query_id = None  # set for a platform image: the re-ranker then drops it and its copies
        if image is not None:  # a file: validate, decode, crop, embed
            img = self.embedder.prepare(image, box)
            timer.lap("validate")
            query = self.embedder.embed([img])[0]
        else:
            query_id = _as_int(image_id, "image_id")
            self.store.visible(query_id, user_id)
            if box is None:  # its stored vector, no network pass
                timer.lap("validate")
                query = self.vectors.get([query_id])[0]
            else:
                img = apply_crop(to_pil(self.load_image(query_id)), box)
                timer.lap("validate")
                query = self.embedder.embed([img])[0]
        timer.lap("embed")
        # over-fetch, then widen (x4) until k candidates survive the rules or the index is exhausted
        n_index = len(self.neighbours)
        fetch = min(n_index, max(4 * k, k + 40))
        while True:
            scores, ids = self.neighbours.search(query, fetch)
            timer.lap("search")
            results, dropped = self.reranker.rerank(
                ids, scores, k=k, meta=self.store.image_meta(ids.tolist()), requester_id=user_id,
                query_image_id=query_id, vectors=self.vectors.get, hashes=self.hashes.get,
            )  # fmt: skip
            timer.lap("rerank")
            if len(results) >= k or fetch >= n_index:
                return SearchResponse(results, timer.finish(), dropped, len(ids))
            fetch = min(n_index, fetch * 4)

    def search_ids(self, query_image_id: int, k: int, user_id: int | None) -> list[int]:
        """Ranked ids for a platform query image: the ``(query_image_id, k, user_id)`` callable the
        online simulation expects."""
        return self.search(image_id=query_image_id, k=k, user_id=user_id).ids

    # ------------------------------------------------------------------ the indexing pipeline
    def upload(self, data: bytes, *, owner_id: int, tags: str = "", is_private: bool = False) -> UploadResult:
        """Validate → object store + images row → embed → index add → save index → commit; all or nothing.

        The new image is searchable as soon as this returns. On any failure the vector is
        removed, the row rolled back and the file deleted, and the error re-raised.
        """
        timer = StageTimer()
        if owner_id is None:
            raise ServingError("an upload needs the owner's user_id")
        self.store.check_user(owner_id)
        tags = str(tags or "")
        if len(tags) > MAX_TAGS_CHARS:
            raise ServingError(f"tags must be at most {MAX_TAGS_CHARS} characters")
        img = self.embedder.prepare(data)
        timer.lap("validate")
        with self._upload_lock:
            indexed: int | None = None
            try:
                with self.store.new_upload(img, owner_id=owner_id, tags=tags, is_private=is_private) as staged:
                    timer.lap("store")
                    emb = self.embedder.embed([img])
                    timer.lap("embed")
                    self.neighbours.add(emb, [staged.image_id])
                    indexed = staged.image_id
                    self.neighbours.save()
                timer.lap("index")  # with the commit
            except BaseException:
                if indexed is not None:
                    self._unindex(indexed)
                raise
            self.vectors.put([staged.image_id], emb)
            self.hashes.put([staged.image_id], perceptual_hash([img]))
        return UploadResult(staged.image_id, staged.storage_key, timer.finish())

    def _unindex(self, image_id: int) -> None:
        """Take a failed upload's vector out again. Should the save fail too, the saved index holds
        an id without a row, which the next start-up's ``sync_index`` removes."""
        self.neighbours.remove([image_id])
        with contextlib.suppress(Exception):
            self.neighbours.save()

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
        self.store.close()
