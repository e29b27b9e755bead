"""Serving: the prediction pipeline and the indexing pipeline behind one facade.

SPEC.md's serving design, made real as four small services and one facade::

    image bytes ──► EmbeddingService ──► NeighbourService ──► ReRanker ──► ranked ids
                    (validate, decode,     (VectorIndex,        (drop the query, private
                     EXIF, mode, crop,      search k' ≥ k)       images of others, flagged,
                     Encoder.embed)                              exact/near duplicates)

    upload: validate → object store file → images row → embed → index add → save index
            (all or nothing: any failure removes the row, the file and the vector)

``SearchService`` composes them and reports the milliseconds spent in each stage; the
HTTP app (``vs_lib.api``), notebook ``08_serving`` and the online simulation all call it,
so there is one search path. ``SearchService.search_ids(query_image_id, k, user_id)`` is
the narrow form the simulation uses.

Conventions: embeddings are ``(n, d) float32`` L2-normalised, scores are inner products
(cosine similarity); image ids are the database's ``images.id`` (corpus ``0..69999``,
uploads from ``70000`` up). A crop box is ``(x0, y0, x1, y1)`` in pixels of the image as
displayed (after EXIF rotation), ``x1``/``y1`` exclusive, like ``PIL.Image.crop``.

User-caused errors raise :class:`ServingError` subclasses that carry an HTTP status
(400 bad input, 404 unknown id, 413 too large, 415 not an image); the state is unchanged
when they are raised.
"""
from __future__ import annotations

import io
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import config

# --------------------------------------------------------------------------- limits
MAX_UPLOAD_BYTES = 10 * 2**20  # 10 MiB per uploaded file
MAX_PIXELS = 40_000_000  # decompression-bomb guard: refuse larger images before decoding
MAX_K = 100  # largest k a caller may ask for
UPLOAD_PREFIX = "uploads/"  # storage keys of uploads, relative to the object store
# Near-duplicates: perceptual hashes within DUP_HAMMING bits (of 64). An embedding rule
# (cosine >= dup_cosine) is available but off by default: an encoder trained to pull a
# class together puts distinct products as close as copies (notebook 08 measures both).
DUP_HAMMING = 2
DUP_COSINE = None


# --------------------------------------------------------------------------- errors
class ServingError(ValueError):
    """A request the service refuses; ``status_code`` is the HTTP status to answer with."""

    status_code = 400


class InvalidImage(ServingError):
    """Zero-byte, corrupt, truncated or undecodable image data."""

    status_code = 400


class NotAnImage(ServingError):
    """Bytes that are not an image format Pillow can read."""

    status_code = 415


class ImageTooLarge(ServingError):
    """More bytes than the upload limit, or more pixels than the decompression-bomb guard."""

    status_code = 413


class NotFound(ServingError, LookupError):
    """Unknown image or user id (also: a private image of another user)."""

    status_code = 404


# --------------------------------------------------------------------------- images
def decode_image(
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Validate and decode uploaded bytes into a PIL image in mode ``L`` or ``RGB``.

    Order of checks: empty → size limit → format → pixel count (before any pixel is
    decoded, so a small file that claims 50,000 × 50,000 pixels costs nothing) → full
    decode (catches truncation) → EXIF orientation applied → colour mode normalised.
    """
    if data is None or len(data) == 0:
        raise InvalidImage("empty file (0 bytes): expected a JPEG, PNG, GIF, BMP, TIFF or WebP image")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"upload of {len(data):,} bytes exceeds the limit of {max_bytes:,} bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image refused by the decompression-bomb guard: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise NotAnImage(
            "not an image Pillow can read (expected JPEG, PNG, GIF, BMP, TIFF or WebP)"
        ) from e
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
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct_error()) as e:
        raise InvalidImage(f"corrupt or truncated image data ({img.format or 'unknown format'}): {e}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not sink an otherwise fine image
        pass
    return normalise_mode(img)


def struct_error() -> type:
    import struct

    return struct.error


GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def normalise_mode(img: Image.Image) -> Image.Image:
    """Any PIL mode → ``L`` (single-channel modes) or ``RGB`` (everything else).

    Delegates to :func:`vs_lib.features.to_mode`, the project's one colour-mode
    conversion: transparency composited on white, 16/32-bit and float images rescaled
    (not clipped), palette and CMYK through RGB.
    """
    from . import features

    if img.mode in ("L", "RGB"):
        return img
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


def parse_crop(crop: str | Sequence[float] | None) -> tuple[int, int, int, int] | None:
    """``"x0,y0,x1,y1"`` (or a 4-sequence) → integer box; ``None``/``""`` → no crop."""
    if crop is None:
        return None
    if isinstance(crop, str):
        text = crop.strip()
        if not text:
            return None
        parts = [p for p in text.replace(" ", ",").split(",") if p != ""]
    else:
        parts = list(crop)
    if len(parts) != 4:
        raise ServingError(f"crop must be four numbers x0,y0,x1,y1 in pixels, got {crop!r}")
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ServingError(f"crop must be four numbers x0,y0,x1,y1 in pixels, got {crop!r}") from None
    if not all(np.isfinite(values)):
        raise ServingError(f"crop values must be finite, got {crop!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in values)
    return x0, y0, x1, y1


def apply_crop(img: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """Crop ``img`` to ``box`` after checking that the box is non-empty and inside the image."""
    if box is None:
        return img
    x0, y0, x1, y1 = box
    w, h = img.size
    if x1 <= x0 or y1 <= y0:
        raise ServingError(f"crop {box} is empty: need x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ServingError(f"crop {box} lies outside the image of {w}x{h} pixels (need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})")
    return img.crop(box)


# --------------------------------------------------------------------------- perceptual hash
HASH_SIZE = 32  # images are reduced to 32 x 32 by area averaging
HASH_LOW = 8  # the 8 x 8 lowest DCT frequencies give the 64 hash bits


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


def perceptual_hash(images: np.ndarray | Image.Image | Sequence[Image.Image]) -> np.ndarray:
    """64-bit DCT perceptual hashes (pHash), one ``uint64`` per image.

    Each image, as grayscale, is reduced to 32 × 32 by area averaging; the 8 × 8 lowest
    frequencies of its 2-D DCT are compared with their median; bit = above the median.
    Visually identical images (re-encoded, rescaled, slightly brightened) differ in few
    bits; unrelated images in about 32. ``images``: ``(n, H, W)`` / ``(H, W)`` array or
    PIL image(s). Written with NumPy only (the imagehash package is not a dependency).
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = images[None]
    if isinstance(images, np.ndarray) and images.ndim == 3:
        x = images.astype(np.float32)
        n, h, w = x.shape
        c = dct_matrix(HASH_SIZE)[:HASH_LOW]
        mh = (c @ area_matrix(h, HASH_SIZE)).astype(np.float32)  # (8, H)
        mw = (c @ area_matrix(w, HASH_SIZE)).astype(np.float32)  # (8, W)
        low = np.matmul(np.matmul(mh, x), mw.T).reshape(n, HASH_LOW * HASH_LOW)
        return _bits_to_uint64(low)
    out = np.empty(len(images), dtype=np.uint64)
    for j, im in enumerate(images):
        if isinstance(im, Image.Image):
            g = normalise_mode(im).convert("L").convert("F")
            f = min(g.size) // (2 * HASH_SIZE)
            if f >= 2:  # a big image: first an exact f x f block average (PIL's reduce), faster
                g = g.reduce(f)
            arr = np.asarray(g, dtype=np.float64)
        else:
            arr = np.asarray(im, dtype=np.float64)
            if arr.ndim == 3:
                arr = arr @ np.array([0.299, 0.587, 0.114])[: arr.shape[2]] if arr.shape[2] == 3 else arr.mean(axis=2)
        out[j] = perceptual_hash(arr[None])[0]
    return out


def _bits_to_uint64(low: np.ndarray) -> np.ndarray:
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Number of differing bits between uint64 hashes (broadcasts)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


# --------------------------------------------------------------------------- services
class EmbeddingService:
    """Preprocessing plus the trained encoder: bytes/PIL/array (+ optional crop) → embedding."""

    def __init__(self, encoder, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS):
        self.encoder = encoder
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    def prepare(self, image: bytes | Image.Image | np.ndarray, crop=None) -> Image.Image:
        """Validate and decode ``image``, honour EXIF rotation, normalise the mode, crop."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            img = decode_image(bytes(image), max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        else:
            img = to_pil(image)
        return apply_crop(img, parse_crop(crop))

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(n, d) float32`` L2-normalised embeddings of prepared PIL images."""
        emb = np.asarray(self.encoder.embed(list(images)), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(images):
            raise RuntimeError(f"encoder returned shape {emb.shape} for {len(images)} images")
        return emb


class ReadWriteLock:
    """Many readers or one writer: concurrent searches, exclusive additions and removals."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class NeighbourService:
    """The nearest-neighbour service: a ``VectorIndex`` behind a lock, optionally persisted.

    FAISS indexes answer concurrent searches safely but must not be modified while being
    searched: searches share a read lock, additions, removals and saves take the write lock.
    The tree kind builds its structure lazily on first search, so it is searched exclusively.
    """

    def __init__(self, index, index_path: str | os.PathLike | None = None):
        self.index = index
        self.index_path = Path(index_path) if index_path is not None else None
        self.rw = ReadWriteLock()
        self._shared_search = getattr(index, "kind", None) != "tree"

    def __len__(self) -> int:
        return len(self.index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` for one ``(d,)`` query → ``(scores, ids)`` without the -1 padding."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        with (self.rw.read() if self._shared_search else self.rw.write()):
            n = len(self.index)
            if n == 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            scores, ids = self.index.search(q, int(min(k, n)))
        scores, ids = np.asarray(scores[0]), np.asarray(ids[0]).astype(np.int64)
        keep = ids >= 0
        return scores[keep], ids[keep]

    def add(self, embeddings: np.ndarray, ids: Sequence[int]) -> None:
        with self.rw.write():
            self.index.add(np.asarray(embeddings, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        with self.rw.write():
            self.index.remove(np.asarray(ids, dtype=np.int64))

    def contains(self, image_id: int) -> bool:
        with self.rw.read():
            return int(image_id) in set(np.asarray(self.index.ids()).tolist())

    def save(self) -> None:
        """Persist the index atomically (``VectorIndex.save`` writes temp file + rename)."""
        if self.index_path is None:
            return
        with self.rw.write():
            self.index.save(self.index_path)


@dataclass
class Result:
    image_id: int
    score: float
    rank: int
    tags: str = ""


@dataclass
class SearchResponse:
    results: list[Result]
    timings_ms: dict[str, float]
    dropped: dict[str, int] = field(default_factory=dict)
    candidates: int = 0

    @property
    def ids(self) -> list[int]:
        return [r.image_id for r in self.results]


@dataclass
class UploadResult:
    image_id: int
    storage_key: str
    timings_ms: dict[str, float]


class ReRanker:
    """Business rules on the candidate list, in order of score.

    A candidate is dropped when it is the query itself, private and not owned by the
    requester, flagged inappropriate, missing from the database, or an exact or near
    duplicate of a result already kept (cosine similarity ≥ ``dup_cosine`` between their
    embeddings, or perceptual hashes within ``dup_hamming`` bits; ``None`` disables a test).
    """

    def __init__(self, dup_cosine: float | None = DUP_COSINE, dup_hamming: int | None = DUP_HAMMING):
        self.dup_cosine = dup_cosine
        self.dup_hamming = dup_hamming

    def rerank(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        *,
        k: int,
        meta: dict[int, tuple],
        requester_id: int | None,
        query_image_id: int | None = None,
        vectors: Callable[[Sequence[int]], np.ndarray] | None = None,
        hashes: Callable[[Sequence[int]], np.ndarray] | None = None,
    ) -> tuple[list[Result], dict[str, int]]:
        """``meta[id] = (owner_id, is_private, is_flagged, tags)``. Returns kept results (≤ k) and drop counts.

        When the query is a platform image (``query_image_id``), copies of it are dropped
        too: the requester already has that picture.
        """
        dropped = {"query": 0, "private": 0, "flagged": 0, "unknown": 0, "duplicate": 0}
        passing: list[int] = []
        for pos, i in enumerate(np.asarray(ids).tolist()):
            if query_image_id is not None and i == query_image_id:
                dropped["query"] += 1
                continue
            m = meta.get(i)
            if m is None:
                dropped["unknown"] += 1
                continue
            owner, private, flagged, _ = m
            if private and (requester_id is None or owner != requester_id):
                dropped["private"] += 1
                continue
            if flagged:
                dropped["flagged"] += 1
                continue
            passing.append(pos)
        ids = np.asarray(ids)
        cand = ids[passing]
        # row 0 is the query when it is a platform image, so its copies count as duplicates
        head = [int(query_image_id)] if query_image_id is not None else []
        look = head + cand.tolist()
        vec = vectors(look) if (vectors is not None and self.dup_cosine is not None and len(cand)) else None
        hsh = hashes(look) if (hashes is not None and self.dup_hamming is not None and len(cand)) else None
        # pairwise "is a duplicate of" matrix, computed once; then a greedy pass in score order
        n = len(look)
        same = np.zeros((n, n), dtype=bool)
        if vec is not None:
            same |= (vec @ vec.T) >= self.dup_cosine
        if hsh is not None:
            same |= hamming(hsh[:, None], hsh[None, :]) <= self.dup_hamming
        kept: list[int] = list(range(len(head)))  # rows of `look` kept so far
        off = len(head)
        for j in range(off, n):
            if len(kept) - off >= k:
                break
            if kept and same[j, kept].any():
                dropped["duplicate"] += 1
                continue
            kept.append(j)
        results = [
            Result(int(look[j]), float(np.asarray(scores)[passing[j - off]]), r + 1, str(meta[int(look[j])][3] or ""))
            for r, j in enumerate(kept[off:])
        ]
        return results, dropped


# --------------------------------------------------------------------------- database helpers
def objects_dir() -> Path:
    """The local object store for uploaded images (``data.objects_dir()``: ``data/objects``)."""
    from . import data

    return data.objects_dir()


def insert_image(
    conn: sqlite3.Connection,
    *,
    owner_id: int,
    storage_key: str,
    tags: str = "",
    is_private: bool = False,
    upload_time: int | None = None,
) -> int:
    """Insert an uploaded image's row (no commit) and return the id SQLite assigned."""
    cols = _image_columns(conn)
    row: dict[str, Any] = {
        "owner_id": int(owner_id),
        "upload_time": int(time.time() if upload_time is None else upload_time),
        "tags": tags,
        "is_private": int(bool(is_private)),
        "is_flagged": 0,
        "storage_key": storage_key,
    }
    if "split" in cols:
        row["split"] = "upload"
    if "synthetic" in cols:
        row["synthetic"] = 0
    row = {c: v for c, v in row.items() if c in cols}
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cur = conn.execute(f"INSERT INTO images ({names}) VALUES ({marks})", list(row.values()))
    return int(cur.lastrowid)


def _image_columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(images)")}


def ensure_index(encoder, index_path: str | os.PathLike, kind: str = "flat", *, conn: sqlite3.Connection | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """``index.sync_index``, rebuilding from scratch when the saved index was made by another
    encoder (the index is derived data: after retraining, re-embedding is the only fix)."""
    from . import index as index_mod

    try:
        return index_mod.sync_index(encoder, conn, index_path, kind=kind, progress=progress)
    except index_mod.IndexMismatchError as e:
        print(f"{e}\nrebuilding the index at {index_path} for {encoder.fingerprint}", flush=True)
        return index_mod.sync_index(encoder, conn, index_path, kind=kind, rebuild=True, progress=progress)


# --------------------------------------------------------------------------- the facade
def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


class SearchService:
    """The one search path: embedding → nearest neighbours → re-ranking, plus uploads.

    Parameters
    ----------
    encoder: a ``models.Encoder`` (anything with ``embed``, ``dim``, ``fingerprint``).
    index: a ``index.VectorIndex`` holding the embeddings of the database's images.
    db_path: the platform database (default ``config.db_path()``).
    index_path: where uploads persist the index (``None``: never saved).
    store_dir: the object store folder (default ``config.data_dir()/objects``).
    corpus_images: optional ``(images, ids)`` to pre-compute perceptual hashes and serve
        images without touching the database loader (the Fashion-MNIST arrays).
    """

    def __init__(
        self,
        encoder,
        index,
        *,
        db_path: str | os.PathLike | None = None,
        index_path: str | os.PathLike | None = None,
        store_dir: str | os.PathLike | None = None,
        corpus_images: tuple[np.ndarray, np.ndarray] | None = None,
        dup_cosine: float | None = DUP_COSINE,
        dup_hamming: int | None = DUP_HAMMING,
        max_k: int = MAX_K,
        max_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PIXELS,
        image_loader: Callable[[sqlite3.Connection, int], np.ndarray] | None = None,
    ):
        self.encoder = encoder
        self.embedder = EmbeddingService(encoder, max_bytes=max_bytes, max_pixels=max_pixels)
        self.neighbours = NeighbourService(index, index_path)
        self.reranker = ReRanker(dup_cosine, dup_hamming)
        self.db_path = Path(db_path) if db_path is not None else config.db_path()
        self.store_dir = Path(store_dir) if store_dir is not None else objects_dir()
        self.max_k = int(max_k)
        self._image_loader = image_loader
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._vectors: dict[int, np.ndarray] = {}
        self._hashes: dict[int, int] = {}
        self._corpus: dict[int, np.ndarray] | None = None
        self._corpus_ids: np.ndarray | None = None
        self._corpus_images: np.ndarray | None = None
        if corpus_images is not None:
            imgs, cids = corpus_images
            self._corpus_images = np.asarray(imgs)
            self._corpus_ids = np.asarray(cids, dtype=np.int64)
            self._corpus_pos = {int(i): p for p, i in enumerate(self._corpus_ids.tolist())}
            hs = np.concatenate([perceptual_hash(self._corpus_images[s : s + 8192]) for s in range(0, len(self._corpus_ids), 8192)]) if len(self._corpus_ids) else np.zeros(0, np.uint64)
            self._hashes.update(zip(self._corpus_ids.tolist(), hs.tolist()))
        else:
            self._corpus_pos = {}
        self._vector_source = self._find_vector_source(index)
        self._prefill_vectors()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_paths(
        cls,
        model_path: str | os.PathLike,
        *,
        index_kind: str = "flat",
        db_path: str | os.PathLike | None = None,
        index_path: str | os.PathLike | None = None,
        store_dir: str | os.PathLike | None = None,
        use_fashion_mnist: bool = True,
        progress: bool = True,
        **kwargs,
    ) -> "SearchService":
        """Load the encoder, bring the index up to date with the database (``index.sync_index``)."""
        from . import data, index as index_mod, models

        encoder = models.load_encoder(model_path)
        db_path = Path(db_path) if db_path is not None else config.db_path()
        if index_path is None:
            index_path = index_mod.default_index_path(encoder.name, kind=index_kind)
        corpus = None
        conn = data.connect(db_path)
        try:
            if use_fashion_mnist:  # serve corpus pixels from memory: map ids to dataset positions by storage key
                ds = data.load_fashion_mnist()
                rows = conn.execute("SELECT id, storage_key FROM images WHERE storage_key LIKE 'fashion-mnist/%'").fetchall()
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                pos = np.array([int(k.split("/")[2]) + (len(ds.train_images) if k.split("/")[1] == "test" else 0)
                                for _, k in rows], dtype=np.int64)
                corpus = (ds.images[pos] if len(pos) else np.zeros((0, 28, 28), np.uint8), ids)
            ensure_index(encoder, index_path, kind=index_kind, conn=conn, progress=progress)
        finally:
            conn.close()
        vindex = index_mod.VectorIndex.load(index_path, expected_dim=encoder.dim, expected_fingerprint=encoder.fingerprint)
        return cls(encoder, vindex, db_path=db_path, index_path=index_path, store_dir=store_dir, corpus_images=corpus, **kwargs)

    # ---------------------------------------------------------------- database access
    @property
    def conn(self) -> sqlite3.Connection:
        """A connection for the calling thread (SQLite connections are per thread)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            self._local.conn = c
        return c

    def _connect(self) -> sqlite3.Connection:
        if not self.db_path.exists():
            raise FileNotFoundError(f"platform database not found at {self.db_path}; run `python -m vs_lib data` first")
        try:
            from . import data

            c = data.connect(self.db_path)
        except ImportError:  # pragma: no cover - data.py is part of the project
            c = sqlite3.connect(self.db_path)
            c.execute("PRAGMA foreign_keys = ON")
        c.execute("PRAGMA busy_timeout = 10000")
        return c

    def image_meta(self, ids: Iterable[int]) -> dict[int, tuple]:
        """``{id: (owner_id, is_private, is_flagged, tags)}`` for the ids that exist."""
        ids = [int(i) for i in ids]
        out: dict[int, tuple] = {}
        for s in range(0, len(ids), 900):
            chunk = ids[s : s + 900]
            q = f"SELECT id, owner_id, is_private, is_flagged, tags FROM images WHERE id IN ({','.join('?' * len(chunk))})"
            for r in self.conn.execute(q, chunk):
                out[int(r[0])] = (None if r[1] is None else int(r[1]), bool(r[2]), bool(r[3]), r[4])
        return out

    def check_user(self, user_id: int | None) -> None:
        if user_id is None:
            return
        if self.conn.execute("SELECT 1 FROM users WHERE id = ?", (int(user_id),)).fetchone() is None:
            raise NotFound(f"unknown user_id {user_id}")

    def visible_meta(self, image_id: int, user_id: int | None) -> tuple:
        """Metadata of an image the requester may see; ``NotFound`` otherwise (no leak of existence).

        Private and flagged images are visible to their owner only.
        """
        m = self.image_meta([image_id]).get(int(image_id))
        if m is None or ((m[1] or m[2]) and (user_id is None or m[0] != int(user_id))):
            raise NotFound(f"unknown image_id {image_id}")
        return m

    def load_image(self, image_id: int) -> np.ndarray:
        """Pixels of an image: the corpus arrays, the object store, or ``data.load_image``."""
        image_id = int(image_id)
        p = self._corpus_pos.get(image_id)
        if p is not None:
            return self._corpus_images[p]
        row = self.conn.execute("SELECT storage_key FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown image_id {image_id}")
        key = row[0] or ""
        if key.startswith(UPLOAD_PREFIX):  # our object store (storage keys are relative to it)
            with Image.open(self.store_dir / key) as im:
                return np.asarray(normalise_mode(im))
        if self._image_loader is not None:
            return np.asarray(self._image_loader(self.conn, image_id))
        from . import data

        return np.asarray(data.load_image(self.conn, image_id))

    def get_image(self, image_id: int, user_id: int | None = None) -> Image.Image:
        """The image as PIL (404 for unknown ids and for another user's private image)."""
        self.visible_meta(image_id, user_id)
        return to_pil(self.load_image(image_id))

    def image_png(self, image_id: int, user_id: int | None = None, size: int | None = None) -> bytes:
        """PNG bytes of an image, optionally scaled so that its longer side is ``size``."""
        img = self.get_image(image_id, user_id)
        if size is not None:
            if not 8 <= int(size) <= 1024:
                raise ServingError(f"size must be between 8 and 1024 pixels, got {size}")
            w, h = img.size
            s = int(size) / max(w, h)
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.NEAREST if s >= 1 else Image.BOX)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def random_ids(self, n: int = 12, user_id: int | None = None, seed: int | None = None) -> list[int]:
        """``n`` random images the requester may see and that are indexed (for a picker)."""
        if not 1 <= int(n) <= 200:
            raise ServingError(f"n must be between 1 and 200, got {n}")
        self.check_user(user_id)
        rng = np.random.default_rng(seed)
        with self.neighbours.rw.read():
            all_ids = np.asarray(self.neighbours.index.ids(), dtype=np.int64)
        if len(all_ids) == 0:
            return []
        pick = rng.choice(all_ids, size=min(len(all_ids), 4 * int(n)), replace=False)
        meta = self.image_meta(pick.tolist())
        out = [int(i) for i in pick if int(i) in meta and not meta[int(i)][2] and (not meta[int(i)][1] or meta[int(i)][0] == user_id)]
        return out[: int(n)]

    # ---------------------------------------------------------------- caches
    @staticmethod
    def _find_vector_source(index) -> Callable[[np.ndarray], np.ndarray] | None:
        """How to read stored embeddings back from the index, if it can.

        A public ``reconstruct(ids)`` / ``get_embeddings(ids)`` wins; otherwise the float
        vectors a ``VectorIndex`` keeps (re-ranking kinds) or FAISS's ``IndexIDMap2``
        (``flat``, ``hnsw``) are read. ``None``: candidates are re-embedded (and cached).
        """
        for name in ("reconstruct", "get_embeddings"):
            f = getattr(index, name, None)
            if callable(f):
                return f
        kept = getattr(index, "_vectors", None)
        if kept is not None and getattr(index, "_ids", None) is not None:
            def from_kept(ids: np.ndarray) -> np.ndarray:
                rows = np.searchsorted(index._ids, ids)
                if np.any(rows >= len(index._ids)) or np.any(index._ids[np.minimum(rows, len(index._ids) - 1)] != ids):
                    raise KeyError("id not in the index")
                return np.asarray(index._vectors[rows], dtype=np.float32)

            return from_kept
        try:
            import faiss

            fi = getattr(index, "_index", None)
            if isinstance(fi, faiss.IndexIDMap2):
                def from_faiss(ids: np.ndarray) -> np.ndarray:
                    return np.asarray(getattr(index, "_index").reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64)), dtype=np.float32)

                return from_faiss
        except Exception:  # pragma: no cover - faiss is a requirement
            pass
        return None

    def _prefill_vectors(self, chunk: int = 50_000) -> None:
        """Read every stored embedding back once (36 MB at 70k x 128), so the re-ranker's
        duplicate test never waits for the index lock."""
        if self._vector_source is None:
            return
        try:
            with self.neighbours.rw.read():
                all_ids = np.asarray(self.neighbours.index.ids(), dtype=np.int64)
                parts = [np.asarray(self._vector_source(all_ids[s : s + chunk]), dtype=np.float32)
                         for s in range(0, len(all_ids), chunk)]
            mat = np.concatenate(parts) if parts else np.zeros((0, self.encoder.dim), np.float32)
            if mat.shape != (len(all_ids), self.encoder.dim):
                return
        except Exception:
            return
        self._vectors.update(zip(all_ids.tolist(), mat))

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """``(n, d)`` stored embeddings of indexed images (from the index, else re-embedded; cached)."""
        ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in self._vectors]
        if missing:
            got = None
            if self._vector_source is not None:
                try:
                    with self.neighbours.rw.read():
                        got = np.asarray(self._vector_source(np.asarray(missing, dtype=np.int64)), dtype=np.float32)
                    if got.shape != (len(missing), self.encoder.dim):
                        got = None
                except Exception:
                    got = None
            if got is None:
                got = self.embedder.embed([to_pil(self.load_image(i)) for i in missing])
            with self._cache_lock:
                self._vectors.update(zip(missing, got))
        return np.stack([self._vectors[i] for i in ids]) if ids else np.zeros((0, self.encoder.dim), np.float32)

    def hashes(self, ids: Sequence[int]) -> np.ndarray:
        """Perceptual hashes of images (pre-computed for the corpus, computed once otherwise)."""
        ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in self._hashes]
        if missing:
            hs = perceptual_hash([to_pil(self.load_image(i)) for i in missing])
            with self._cache_lock:
                self._hashes.update(zip(missing, hs.tolist()))
        return np.asarray([self._hashes[i] for i in ids], dtype=np.uint64)

    # ---------------------------------------------------------------- the prediction pipeline
    def _check_k(self, k) -> int:
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise ServingError(f"k must be an integer between 1 and {self.max_k}, got {k!r}") from None
        if not 1 <= k <= self.max_k:
            raise ServingError(f"k must be between 1 and {self.max_k}, got {k}")
        return k

    def search(
        self,
        image: bytes | Image.Image | np.ndarray | None = None,
        *,
        image_id: int | None = None,
        crop: str | Sequence[float] | None = None,
        k: int = 10,
        user_id: int | None = None,
    ) -> SearchResponse:
        """Rank the images most similar to ``image`` (bytes/PIL/array) or to corpus image ``image_id``.

        ``crop`` (``x0,y0,x1,y1`` pixels of the original) restricts the query to a rectangle.
        ``user_id`` is the requester: their own private images may appear, nobody else's.
        Returns up to ``k`` results (fewer only when the whole index has fewer eligible
        images) and the milliseconds spent per stage: ``validate``, ``embed``, ``search``,
        ``rerank``, ``total``.
        """
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        k = self._check_k(k)
        if (image is None) == (image_id is None):
            raise ServingError("give exactly one of an image file or an image_id")
        self.check_user(user_id)
        box = parse_crop(crop)
        query_id = None
        if image_id is not None:
            try:
                query_id = int(image_id)
            except (TypeError, ValueError):
                raise ServingError(f"image_id must be an integer, got {image_id!r}") from None
            self.visible_meta(query_id, user_id)
            if box is None:
                timings["validate"] = _ms(t0)
                t0 = time.perf_counter()
                query = self.vectors([query_id])[0]
            else:
                img = apply_crop(to_pil(self.load_image(query_id)), box)
                timings["validate"] = _ms(t0)
                t0 = time.perf_counter()
                query = self.embedder.embed([img])[0]
        else:
            img = self.embedder.prepare(image, box)
            timings["validate"] = _ms(t0)
            t0 = time.perf_counter()
            query = self.embedder.embed([img])[0]
        timings["embed"] = _ms(t0)

        # nearest neighbours, then re-ranking; widen the candidate list until k survive
        n_index = len(self.neighbours)
        fetch = min(n_index, max(4 * k, k + 40))
        t_search = t_rerank = 0.0
        while True:
            t0 = time.perf_counter()
            scores, ids = self.neighbours.search(query, fetch)
            t_search += time.perf_counter() - t0
            t0 = time.perf_counter()
            meta = self.image_meta(ids.tolist())
            results, dropped = self.reranker.rerank(
                ids, scores, k=k, meta=meta, requester_id=user_id, query_image_id=query_id,
                vectors=self.vectors, hashes=self.hashes,
            )
            t_rerank += time.perf_counter() - t0
            if len(results) >= k or fetch >= n_index:
                break
            fetch = min(n_index, fetch * 4)
        timings["search"] = round(t_search * 1000, 3)
        timings["rerank"] = round(t_rerank * 1000, 3)
        timings["total"] = _ms(t_all)
        return SearchResponse(results, timings, dropped, int(len(ids)))

    def search_ids(self, query_image_id: int, k: int, user_id: int) -> list[int]:
        """Ranked image ids for a corpus query image (the online simulation's entry point)."""
        return self.search(image_id=query_image_id, k=k, user_id=user_id).ids

    # ---------------------------------------------------------------- the indexing pipeline
    def upload(
        self,
        data: bytes,
        *,
        owner_id: int,
        tags: str = "",
        is_private: bool = False,
    ) -> UploadResult:
        """Validate → object store → images row → embed → index add → save index; all or nothing.

        Returns the new image id, searchable as soon as this returns. On any failure
        the row, the stored file and the vector are removed again and the error re-raised.
        """
        timings: dict[str, float] = {}
        t_all = t0 = time.perf_counter()
        if owner_id is None:
            raise ServingError("an upload needs the owner's user_id")
        self.check_user(owner_id)
        if tags is not None and len(str(tags)) > 500:
            raise ServingError("tags must be at most 500 characters")
        img = self.embedder.prepare(data)
        timings["validate"] = _ms(t0)
        with self._write_lock:
            conn = self.conn
            key = f"{UPLOAD_PREFIX}{uuid.uuid4().hex}.png"
            path = self.store_dir / key
            image_id = None
            added = False
            try:
                t0 = time.perf_counter()
                with config.atomic_path(path) as tmp:
                    img.save(tmp, format="PNG")
                timings["store"] = _ms(t0)
                t0 = time.perf_counter()
                image_id = insert_image(conn, owner_id=owner_id, storage_key=key, tags=str(tags or ""), is_private=is_private)
                timings["db"] = _ms(t0)
                t0 = time.perf_counter()
                emb = self.embedder.embed([img])
                timings["embed"] = _ms(t0)
                t0 = time.perf_counter()
                self.neighbours.add(emb, [image_id])
                added = True
                h = int(perceptual_hash([img])[0])
                self.neighbours.save()
                conn.commit()
                timings["index"] = _ms(t0)
            except BaseException:
                if added:
                    try:
                        self.neighbours.remove([image_id])
                        self.neighbours.save()
                    except Exception:
                        pass
                try:
                    conn.rollback()
                except Exception:
                    pass
                if path.exists():
                    path.unlink()
                raise
            with self._cache_lock:
                self._vectors[image_id] = emb[0]
                self._hashes[image_id] = h
        timings["total"] = _ms(t_all)
        return UploadResult(int(image_id), key, timings)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "images_indexed": int(len(self.neighbours)),
            "model": str(getattr(self.encoder, "name", "encoder")),
            "fingerprint": str(getattr(self.encoder, "fingerprint", "")),
            "dim": int(getattr(self.encoder, "dim", 0)),
            "index_kind": str(getattr(self.neighbours.index, "kind", type(self.neighbours.index).__name__)),
        }

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


# --------------------------------------------------------------------------- a small platform
def build_small_platform(
    folder: str | os.PathLike,
    n_images: int = 3000,
    n_users: int = 40,
    *,
    seed: int = 0,
    private_rate: float = 0.1,
    flagged_rate: float = 0.03,
    encoder=None,
    dim: int = 64,
) -> dict[str, Path]:
    """A self-contained platform in ``folder`` for tests, the smoke notebook and demos.

    The first ``n_images`` Fashion-MNIST training images (ids ``0..n_images-1``) with
    seeded synthetic owners, private and flagged flags (higher rates than the real
    database, so that the filters have work), ``n_users`` synthetic users, an encoder
    (default: a PCA-``dim`` projection of the pixels, fitted in a second; pass a trained
    ``Encoder`` to use it instead) and a flat index of all the images. Returns the paths:
    ``{"data_dir", "db", "model", "index"}``; point ``VS_DATA_DIR``/``VS_DB`` at them to
    run ``python -m vs_lib serve --model <model>`` on this platform.
    """
    from . import data, index as index_mod, models

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ds = data.load_fashion_mnist()
    n_images = int(min(n_images, len(ds.train_images)))
    rng = np.random.default_rng(seed)
    db = folder / "visual_search.db"
    with config.atomic_path(db) as tmp:
        tmp.unlink()
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(data.SCHEMA)
            users = [
                (u, f"user{u:05d}", int(rng.integers(18, 70)), data.GENDERS[u % 4], data.CITIES[u % 20][0],
                 data.CITIES[u % 20][1], f"user{u:05d}@example.com", 1)
                for u in range(1, n_users + 1)
            ]
            owners = rng.integers(1, n_users + 1, n_images)
            private = rng.random(n_images) < private_rate
            flagged = rng.random(n_images) < flagged_rate
            tag_text = [",".join(t) for t in data.CLASS_TAGS]
            images = [
                (i, int(owners[i]), data.EPOCH_START + i, tag_text[int(ds.train_labels[i])], int(private[i]),
                 int(flagged[i]), f"fashion-mnist/train/{i}", "train", 1)
                for i in range(n_images)
            ]
            with conn:
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [("synthetic", f"small platform, seed {seed}")])
                conn.executemany("INSERT INTO users VALUES (?,?,?,?,?,?,?,?)", users)
                conn.executemany("INSERT INTO images VALUES (?,?,?,?,?,?,?,?,?)", images)
        finally:
            conn.close()
    if encoder is None:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny eigendecomposition: extra threads only spin on a busy machine
        try:
            encoder = models.baseline_encoder("pca", train_images=ds.train_images[:n_images], seed=seed, dim=dim)
        finally:
            torch.set_num_threads(threads)
    model = folder / "models" / f"{encoder.name}.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    encoder.save(model)
    encoder = models.load_encoder(model)  # exactly what a server will load
    ipath = folder / "index" / f"{encoder.name}-flat"
    vindex = index_mod.VectorIndex(encoder.dim, "flat", fingerprint=encoder.fingerprint)
    vindex.add(encoder.embed(ds.train_images[:n_images]), np.arange(n_images, dtype=np.int64))
    vindex.save(ipath)
    return {"data_dir": folder, "db": db, "model": model, "index": ipath}


def open_small_platform(paths: dict[str, Path], **kwargs) -> SearchService:
    """A :class:`SearchService` over a platform made by :func:`build_small_platform`."""
    from . import data, index as index_mod, models

    encoder = models.load_encoder(paths["model"])
    vindex = index_mod.VectorIndex.load(paths["index"], expected_dim=encoder.dim, expected_fingerprint=encoder.fingerprint)
    ds = data.load_fashion_mnist()
    conn = sqlite3.connect(paths["db"])
    try:  # corpus rows only (uploads to this small platform get ids right after them)
        n = conn.execute("SELECT COUNT(*) FROM images WHERE storage_key LIKE 'fashion-mnist/%'").fetchone()[0]
    finally:
        conn.close()
    kwargs.setdefault("store_dir", Path(paths["data_dir"]) / "objects")
    return SearchService(encoder, vindex, db_path=paths["db"], index_path=paths["index"],
                         corpus_images=(ds.train_images[:n], np.arange(n, dtype=np.int64)), **kwargs)
