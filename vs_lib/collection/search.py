"""Searching a collection by image or crop: :class:`Collection` and ``python -m vs_lib search``.

    coll = Collection.open(folder="~/Pictures")
    found = coll.search("query.jpg", k=10, crop=(90, 20, 380, 300), min_score=0.3)
    [(hit.path, hit.score, hit.duplicates) for hit in found.results]

A query is a file path, the bytes of an upload, or a PIL image, at any resolution: a JPEG
is decoded at reduced size (libjpeg's 1/2, 1/4, 1/8 scales) whenever the model's 224 pixels
(or the crop's) survive it, which makes a 12-megapixel query several times cheaper.  A crop
box ``(x0, y0, x1, y1)`` is in pixels of the full-size image as displayed (after EXIF
rotation), ``x1``/``y1`` exclusive.

Scores are cosine similarities after the collection's post-processing: by default every
vector, the query's too, has the collection's mean embedding subtracted and is normalised
again ("centring"), which removes the direction all the images of one folder share.

Re-ranking keeps near-duplicates *of the query* (people search to find the original of a
photo) and collapses near-duplicates *among the results*: a candidate whose content hash
equals, or whose perceptual hash is within :data:`DUP_HAMMING` bits of, a result already
kept is counted in that result's ``duplicates`` instead of taking a place of its own.

The API a server needs: :meth:`Collection.search` (``path`` relative to the folder and
``score`` per result), :meth:`Collection.thumbnail` (PNG bytes of an indexed path; nothing
outside the collection's files is ever read) and :meth:`Collection.paths`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import folders
from .store import POSTPROCESSING, CollectionError, CollectionState
from .sync import load_model, open_state

__all__ = [
    "CLI_HELP",
    "DUP_HAMMING",
    "Collection",
    "Hit",
    "Query",
    "SearchResult",
    "cli_add_arguments",
    "cli_main",
    "parse_box",
]

DUP_HAMMING = 4  # perceptual hashes within 4 of 64 bits: the same picture (re-encoded, resized)
Box = tuple[int, int, int, int]
Query = str | os.PathLike[str] | bytes | Image.Image


@dataclass(frozen=True)
class Hit:
    """One result: ``path`` relative to the folder, ``score`` (cosine similarity), ``rank``
    from 1, and the near-duplicates collapsed into it (``duplicates``, ``duplicate_paths``)."""

    path: str
    score: float
    rank: int
    duplicates: int = 0
    duplicate_paths: tuple[str, ...] = ()


@dataclass
class SearchResult:
    """The ranked ``results`` of one query, what was collapsed, and where the time went (ms)."""

    query: str
    crop: Box | None
    results: list[Hit]
    candidates: int
    collapsed: int
    image_size: tuple[int, int]
    decoded_size: tuple[int, int]
    milliseconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["results"] = [{**asdict(h), "duplicate_paths": list(h.duplicate_paths)} for h in self.results]
        return d


def parse_box(crop: str | Any | None) -> Box | None:
    """``"x0,y0,x1,y1"`` or four numbers → an integer box; ``None`` / ``""`` → no crop."""
    if crop is None or (isinstance(crop, str) and not crop.strip()):
        return None
    parts = crop.replace(" ", ",").split(",") if isinstance(crop, str) else list(crop)
    parts = [p for p in parts if p != ""]
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise CollectionError(f"a crop is four numbers x0,y0,x1,y1 in pixels, got {crop!r}")
    x0, y0, x1, y1 = (round(v) for v in values)
    return x0, y0, x1, y1


def check_box(box: Box, size: tuple[int, int]) -> None:
    """:class:`CollectionError` unless ``box`` is non-empty and inside an image of ``size`` (w, h)."""
    x0, y0, x1, y1 = box
    w, h = size
    if x1 <= x0 or y1 <= y0:
        raise CollectionError(f"crop {box} is empty: need x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise CollectionError(
            f"crop {box} lies outside the image of {w}x{h} pixels (need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
        )


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise CollectionError(f"k must be a positive number of results, got {k!r}")
    return int(k)


class Collection:
    """A saved collection, ready to search (the encoder and the index are loaded on first use)."""

    def __init__(self, state: CollectionState, encoder: Any = None, dup_hamming: int | None = DUP_HAMMING):
        if state.postprocess not in POSTPROCESSING:
            raise CollectionError(f"unknown post-processing {state.postprocess!r}; expected one of {POSTPROCESSING}")
        self.state = state
        self.dup_hamming = dup_hamming
        self._encoder = encoder
        self._index: Any = None
        self._by_path = {r.path: i for i, r in enumerate(state.records)}
        self._phash = np.array([r.phash for r in state.records], dtype=np.uint64)

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str] | None = None,
        name: str | None = None,
        model: str | None = None,
        *,
        encoder: Any = None,
    ) -> Collection:
        """The collection named ``name``, or the one that indexes ``folder`` (with ``model``, if given).

        ``encoder``: the encoder object to embed queries with (default: loaded by the model's name).
        """
        return cls(open_state(folder, name, model), encoder=encoder)

    # ----- what it holds
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def folder(self) -> Path:
        return Path(self.state.folder)

    def __len__(self) -> int:
        return len(self.state.records)

    def paths(self) -> list[str]:
        """Every indexed path, relative to the folder, sorted."""
        return [r.path for r in self.state.records]

    def row(self, path: str) -> int:
        """The row of ``path``; :class:`CollectionError` (HTTP 404 for a server) if it is not indexed."""
        try:
            return self._by_path[path]
        except KeyError:
            raise CollectionError(f"{path!r} is not an image of the collection {self.name!r}") from None

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            enc, _ = load_model(self.state.model, self.folder)
            if enc.fingerprint != self.state.fingerprint:
                raise CollectionError(
                    f"the encoder {self.state.model!r} changed since {self.name!r} was indexed: "
                    f"re-run `python -m vs_lib index --folder {self.folder}`"
                )
            self._encoder = enc
        return self._encoder

    @property
    def mean(self) -> np.ndarray:
        """(dim,) the mean of the collection's embeddings (zeros without post-processing)."""
        v = self.state.vectors
        return v.mean(axis=0) if self.state.postprocess == "centre" and len(v) else np.zeros(self.state.dim, np.float32)

    def postprocess(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) raw embeddings → the vectors scores are computed on (centred, L2-normalised)."""
        x = np.asarray(vectors, np.float32) - self.mean
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    @property
    def embeddings(self) -> np.ndarray:
        """(n, dim) float32: the post-processed vectors of :meth:`paths`, row for row."""
        return self.postprocess(self.state.vectors)

    @property
    def index(self) -> Any:
        if self._index is None:
            from .. import index as vindex

            idx = vindex.create(self.state.dim, "flat", fingerprint=self.state.fingerprint)
            idx.add(self.embeddings, np.arange(len(self), dtype=np.int64))
            self._index = idx
        return self._index

    # ----- reading files of the folder
    def image(self, path: str) -> Image.Image:
        """The RGB image of an indexed ``path`` (only indexed files are ever opened)."""
        self.row(path)
        try:
            return folders.load_file_image(self.folder, path, draft_min_side=1024)
        except folders.ImageFileError as e:
            raise CollectionError(f"{path}: {e}") from None

    def thumbnail(self, path: str, size: int = 256) -> bytes:
        """PNG bytes of an indexed ``path``, its longer side ``size`` pixels (16..1024) at most."""
        if not 16 <= int(size) <= 1024:
            raise CollectionError(f"thumbnail size must be between 16 and 1024 pixels, got {size}")
        self.row(path)
        try:
            im = folders.load_file_image(self.folder, path, draft_min_side=int(size))
        except folders.ImageFileError as e:
            raise CollectionError(f"{path}: {e}") from None
        im.thumbnail((int(size), int(size)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    # ----- queries
    def query_image(self, query: Query, crop: Any = None) -> tuple[Image.Image, folders.DecodedImage, Box | None]:
        """``(image the encoder reads, decoded query, crop box)``: decode (reduced JPEG), check and apply the crop."""
        box = parse_box(crop)
        side = max(self.encoder.preprocess.size)
        if isinstance(query, Image.Image):
            from ..features import to_mode

            decoded = folders.DecodedImage(to_mode(query, "RGB"), query.size)
        else:
            if isinstance(query, bytes):
                data = query
            else:
                try:
                    data = Path(query).read_bytes()
                except OSError as e:
                    raise CollectionError(f"cannot read the query {query}: {type(e).__name__}") from None
            try:
                decoded = folders.decode_image_bytes(data, draft_min_side=side, box=box)
            except folders.ImageFileError as e:
                raise CollectionError(f"the query is not a usable image: {e}") from None
        im = decoded.image
        if box is not None:
            check_box(box, decoded.full_size)
            s = decoded.scale
            x0, y0, x1, y1 = box
            im = im.crop(
                (int(x0 * s), int(y0 * s), max(int(x0 * s) + 1, round(x1 * s)), max(int(y0 * s) + 1, round(y1 * s)))
            )
        return im, decoded, box

    def embed_query(self, query: Query, crop: Any = None) -> np.ndarray:
        """(dim,) the post-processed embedding of a query (or of its crop)."""
        im, _, _ = self.query_image(query, crop)
        return self.postprocess(self.encoder.embed([im], batch_size=1))[0]

    def search(self, query: Query, k: int = 10, *, crop: Any = None, min_score: float | None = None) -> SearchResult:
        """The ``k`` most similar images of the collection, near-duplicates among them collapsed."""
        k = check_k(k)
        t0 = time.perf_counter()
        im, decoded, box = self.query_image(query, crop)
        t1 = time.perf_counter()
        q = self.postprocess(self.encoder.embed([im], batch_size=1))
        t2 = time.perf_counter()
        n_candidates = min(len(self), 3 * k + 20)
        scores, rows = self.index.search(q, n_candidates)
        t3 = time.perf_counter()
        hits, collapsed = self.collapse(scores[0], rows[0], k, min_score)
        t4 = time.perf_counter()
        ms = {"decode": t1 - t0, "embed": t2 - t1, "search": t3 - t2, "rerank": t4 - t3, "total": t4 - t0}
        label = "<image>" if isinstance(query, Image.Image) else "<upload>" if isinstance(query, bytes) else str(query)
        return SearchResult(
            label,
            box,
            hits,
            n_candidates,
            collapsed,
            decoded.full_size,
            decoded.image.size,
            {s: 1e3 * v for s, v in ms.items()},
        )

    def is_duplicate(self, a: int, b: int) -> bool:
        """Rows ``a`` and ``b`` hold the same content, or pictures whose hashes are within ``dup_hamming``."""
        ra, rb = self.state.records[a], self.state.records[b]
        if ra.sha256 == rb.sha256:
            return True
        if self.dup_hamming is None:
            return False
        return int(np.bitwise_count(np.uint64(ra.phash) ^ np.uint64(rb.phash))) <= self.dup_hamming

    def collapse(self, scores: np.ndarray, rows: np.ndarray, k: int, min_score: float | None) -> tuple[list[Hit], int]:
        """Candidates (best first) → at most ``k`` hits; a near-duplicate of a kept hit is counted in it."""
        kept: list[int] = []
        kept_scores: list[float] = []
        dups: list[list[int]] = []
        collapsed = 0
        for score, row in zip(scores, rows, strict=True):
            if row < 0 or (min_score is not None and score < min_score):
                continue
            owner = next((j for j, r in enumerate(kept) if self.is_duplicate(int(row), r)), None)
            if owner is not None:
                dups[owner].append(int(row))
                collapsed += 1
            elif len(kept) < k:
                kept.append(int(row))
                kept_scores.append(float(score))
                dups.append([])
        paths = self.paths()
        hits = [
            Hit(paths[r], s, i + 1, len(d), tuple(paths[x] for x in d))
            for i, (r, s, d) in enumerate(zip(kept, kept_scores, dups, strict=True))
        ]
        return hits, collapsed


# --------------------------------------------------------------------------- python -m vs_lib search
CLI_HELP = "search a collection (a folder of your own images) by image or crop"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"k must be a positive number of results, got {value}")
    return value


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="+", type=Path, metavar="QUERY_IMAGE", help="image file(s) to search with")
    where = parser.add_argument_group("which collection")
    where.add_argument(
        "--folder", type=Path, default=None, help="the indexed folder (its collection is found by folder)"
    )
    where.add_argument("--name", default=None, help="the collection's name instead of --folder")
    where.add_argument("--model", default=None, help="the collection of this model (default: the photo encoder's)")
    parser.add_argument("--crop", default=None, help="x0,y0,x1,y1: search with this rectangle of each query (pixels)")
    parser.add_argument("-k", type=_positive_int, default=10, help="results per query (default 10)")
    parser.add_argument("--min-score", type=float, default=None, help="drop results below this similarity")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (PNG) of queries and results")


def cli_main(args: argparse.Namespace) -> int:
    try:
        coll = Collection.open(args.folder, args.name, args.model)
        found = [coll.search(q, args.k, crop=args.crop, min_score=args.min_score) for q in args.queries]
    except (CollectionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.sheet is not None:
        from .sheet import search_sheet, write_png

        queries = [coll.query_image(q)[1].image for q in args.queries]
        write_png(search_sheet(queries, found, coll.image), args.sheet)
    if args.json:
        doc = {
            "collection": coll.name,
            "folder": str(coll.folder),
            "model": coll.state.model,
            "queries": [f.to_json() for f in found],
        }
        print(json.dumps(doc, indent=2))
        return 0
    for f in found:
        crop = f" crop {f.crop}" if f.crop else ""
        print(
            f"{f.query}{crop}: {len(f.results)} results ({f.collapsed} near-duplicates collapsed, {f.milliseconds['total']:.0f} ms)"
        )
        for h in f.results:
            extra = f"  (+{h.duplicates} near-duplicate{'s' if h.duplicates > 1 else ''})" if h.duplicates else ""
            print(f"  {h.rank:3d}  {h.score:6.3f}  {h.path}{extra}")
    if args.sheet is not None:
        print(f"contact sheet: {args.sheet}")
    return 0
