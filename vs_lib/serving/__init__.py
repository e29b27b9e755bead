"""Serving: the prediction pipeline and the indexing pipeline behind one facade.

Three services and a facade that composes them::

    image bytes ──► EmbeddingService ──► NeighbourService ──► ReRanker ──► ranked ids
                    (validate, decode,     (vector index,       (drop the query, hidden
                     EXIF, mode, crop,      search k' > k)       images, exact and near
                     Encoder.embed)                              duplicates)

    upload: validate → embed → object file → images row + vector (one commit) → searchable
            (all or nothing; the index on disk is a background snapshot, replayed at start-up)

One module per job; the facade imports the parts, never the other way round:

=============  ========================================================================
module         job
=============  ========================================================================
errors         the errors a caller can cause, each with its HTTP status
images         decoding untrusted bytes: limits, EXIF, colour mode; crops; PNG out
hashing        the perceptual hash (pHash) and Hamming distance
access         who may see what: ``ImageMeta`` and the one visibility rule
rerank         ``ReRanker``: visibility and duplicate rules on the candidates; ``Result``
embedding      ``EmbeddingService``: preprocessing + the encoder
neighbours     ``NeighbourService``: base index + a delta uploads change without waiting; ``ensure_index``
snapshots      ``Snapshotter``: the background thread that saves the index
caches         stored vectors (read back with ``index.reconstruct``) and hashes by id
store          ``PlatformStore``: database rows, pixels by storage key, an upload's file and commit
responses      ``SearchResponse``, ``UploadResult``, ``Health``; the per-stage timer
candidates     ``CandidateSearch``: over-fetch, re-rank, widen until k survive (bounded, with a deadline)
indexing       ``IndexingPipeline``: upload transaction, deletion, reconciliation, snapshots
facade         ``SearchService``: composes the parts; the search pipeline (an ``IndexingPipeline``)
=============  ========================================================================

Conventions: embeddings are ``(n, d) float32`` L2-normalised and scores are inner products
(cosine similarity); image ids are the database's ``images.id``; pixels are reached through
an image's storage key (:func:`vs_lib.data.load_pixels`). A crop box is ``(x0, y0, x1, y1)``
in pixels of the image as displayed (after EXIF rotation), ``x1``/``y1`` exclusive.

User-caused errors raise :class:`ServingError` subclasses that carry an HTTP status (400 bad
input, 403 not yours, 404 unknown id, 413 too large, 415 not an image); nothing changes when
they are raised.
"""

from .access import ImageMeta, hidden_reason
from .embedding import EmbeddingService
from .errors import ImageTooLarge, InvalidImage, NotAnImage, NotFound, ServingError
from .facade import DEADLINE_MS, MAX_CANDIDATES, MAX_K, Forbidden, SearchService
from .hashing import hamming, perceptual_hash
from .images import MAX_PIXELS, MAX_UPLOAD_BYTES, apply_crop, decode_image, encode_png, parse_crop, to_pil
from .neighbours import Delta, NeighbourService, ReadWriteLock, ensure_index
from .rerank import DUP_COSINE, DUP_HAMMING, ReRanker, Result
from .responses import Health, SearchResponse, UploadResult
from .snapshots import Snapshotter
from .store import PlatformStore

__all__ = [
    "DEADLINE_MS",
    "DUP_COSINE",
    "DUP_HAMMING",
    "MAX_CANDIDATES",
    "MAX_K",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "Delta",
    "EmbeddingService",
    "Forbidden",
    "Health",
    "ImageMeta",
    "ImageTooLarge",
    "InvalidImage",
    "NeighbourService",
    "NotAnImage",
    "NotFound",
    "PlatformStore",
    "ReRanker",
    "ReadWriteLock",
    "Result",
    "SearchResponse",
    "SearchService",
    "ServingError",
    "Snapshotter",
    "UploadResult",
    "apply_crop",
    "decode_image",
    "encode_png",
    "ensure_index",
    "hamming",
    "hidden_reason",
    "parse_crop",
    "perceptual_hash",
    "to_pil",
]
