"""Folder mode: the same web page and a small HTTP API over one folder of the user's own images.

``python -m vs_lib serve --folder DIR`` brings the folder's collection up to date
(:func:`vs_lib.collection.index_folder`, incremental) and serves it with
:func:`create_folder_app`. A folder server is one person's local tool: it binds to 127.0.0.1,
refuses any other address unless ``--allow-remote`` is given (anyone who can reach the port
then sees the photos), and answers only requests addressed to this machine (no DNS rebinding).

Endpoints (``path`` is always relative to the folder, POSIX slashes):

- ``GET /health`` → ``{"status", "mode": "folder", "images_indexed", "model", "collection", ...}``
  (the page reads ``mode`` to show its folder controls);
- ``GET /files?offset=&limit=`` → one page of the indexed paths, with thumbnail URLs;
- ``GET /files/thumbnail?path=&size=`` → PNG, longer side ``size`` (16..1024);
- ``GET /files/view?path=`` → JPEG of at most :data:`VIEW_SIZE` pixels a side for drawing a crop on,
  with the full-size ``width``/``height`` in the ``X-Full-Width``/``X-Full-Height`` headers
  (crops are always given in full-size pixels);
- ``POST /search`` (multipart): ``path`` (an indexed file) *or* ``image`` (an upload, never
  written anywhere), optional ``crop`` (``x0,y0,x1,y1`` full-size pixels), ``k`` (1..100),
  ``min_score`` (drop results below this cosine similarity) → ranked ``results`` with
  ``path``, ``score``, ``rank``, ``duplicates``, ``thumbnail_url``.

A file is served only if it is indexed *and* its real path lies inside the folder (a
symlink in the folder that points out of it is indexed by the scan but never served);
anything else is 404. Bad input (non-image, decompression bomb, bad crop, ``k <= 0``) is a
400 naming the problem, an oversized body 413; nothing is changed by any request.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import folders
from ..collection import Collection, CollectionBusyError, CollectionError
from . import pages
from .forms import THUMB_SIZE, ErrorAnswer
from .middleware import FORM_OVERHEAD, BodyLimitMiddleware
from .security import LOOPBACK_NAMES, is_loopback

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # a query upload; larger bodies are refused before parsing (413)
MAX_K = 100
MAX_PAGE = 200  # at most this many paths per GET /files
VIEW_SIZE = 1024  # longer side of the image the page draws a crop on

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "a bad field, image or crop"},
    404: {"model": ErrorAnswer, "description": "not an indexed file inside the folder"},
    413: {"model": ErrorAnswer, "description": "the upload exceeds the size limit"},
    503: {"model": ErrorAnswer, "description": "the collection is being updated by another process"},
}


class FolderRequestError(CollectionError):
    """A refused request with its HTTP status (400 unless a subclass says otherwise)."""

    status_code = 400


class NotServed(FolderRequestError):
    """Not an indexed file inside the folder: 404, whatever the reason (unknown, outside, gone)."""

    status_code = 404


# --------------------------------------------------------------------------- what a request may read
class FolderFiles:
    """The collection behind the app and the one rule for reading its files.

    Searches run one at a time (a single user's tool; the encoder gets every thread it
    was given instead of sharing them)."""

    def __init__(self, coll: Collection):
        self.coll = coll
        self.root = Path(os.path.realpath(coll.folder))
        self.search_lock = threading.Lock()

    def checked(self, path: str) -> Path:
        """The file of an indexed ``path`` whose real location lies inside the folder; else :class:`NotServed`."""
        try:
            self.coll.row(path)
        except CollectionError:
            raise NotServed(f"{path!r} is not an indexed image of this folder") from None
        real = Path(os.path.realpath(self.root / path))
        if not real.is_relative_to(self.root) or not real.is_file():
            raise NotServed(f"{path!r} is not an indexed image of this folder")
        return real

    def servable(self, path: str) -> bool:
        try:
            self.checked(path)
        except NotServed:
            return False
        return True


def files_of(request: Request) -> FolderFiles:
    files: FolderFiles = request.app.state.folder
    return files


def thumbnail_path_url(path: str, size: int = THUMB_SIZE) -> str:
    return f"/files/thumbnail?path={quote(path, safe='')}&size={int(size)}"


# --------------------------------------------------------------------------- answers
class FolderHealth(BaseModel):
    status: str
    mode: str  # "folder" (the platform's /health has no mode)
    images_indexed: int
    model: str
    fingerprint: str
    dim: int
    index_kind: str
    collection: str
    folder: str


class FileEntry(BaseModel):
    path: str
    thumbnail_url: str | None  # None: indexed, but not a file inside the folder (never served)


class FilesAnswer(BaseModel):
    total: int
    offset: int
    limit: int
    files: list[FileEntry]


class FolderHit(BaseModel):
    path: str  # relative to the folder
    score: float  # cosine similarity to the query (after the collection's centring)
    rank: int  # from 1
    duplicates: int  # near-duplicates collapsed into this result
    duplicate_paths: list[str]
    thumbnail_url: str | None


class FolderSearchAnswer(BaseModel):
    results: list[FolderHit]
    collapsed: int
    candidates: int
    min_score: float | None
    image_size: list[int]  # full size (w, h) of the query image
    timings_ms: dict[str, float]


router = APIRouter()


@router.get("/", include_in_schema=False)
def index_page() -> Response:
    return pages.index_page()


@router.get("/health", summary="Service status (folder mode)", tags=["status"])
def health(request: Request) -> FolderHealth:
    coll = files_of(request).coll
    return FolderHealth(
        status="ok",
        mode="folder",
        images_indexed=len(coll),
        model=coll.state.model,
        fingerprint=coll.state.fingerprint,
        dim=coll.state.dim,
        index_kind="flat",
        collection=coll.name,
        folder=str(coll.folder),
    )


@router.get("/files", summary="One page of the folder's indexed images", tags=["files"], responses=ERRORS)
def list_files(
    request: Request,
    offset: int = Query(0, ge=0, description="first path (sorted) to list"),
    limit: int = Query(48, ge=1, le=MAX_PAGE, description=f"how many, 1..{MAX_PAGE}"),
) -> FilesAnswer:
    files = files_of(request)
    paths = files.coll.paths()
    page = [FileEntry(path=p, thumbnail_url=thumbnail_path_url(p) if files.servable(p) else None)
            for p in paths[offset : offset + limit]]  # fmt: skip
    return FilesAnswer(total=len(paths), offset=offset, limit=limit, files=page)


PNG = {200: {"content": {"image/png": {}}, "description": "the image as PNG"}, **ERRORS}
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the image as JPEG"}, **ERRORS}


@router.get("/files/thumbnail", summary="Thumbnail of an indexed image", tags=["files"], response_class=Response,
            responses=PNG)  # fmt: skip
def thumbnail(
    request: Request,
    path: str = Query(..., description="relative to the folder"),
    size: int = Query(THUMB_SIZE, description="longer side in pixels, 16..1024"),
) -> Response:
    files = files_of(request)
    files.checked(path)
    png = files.coll.thumbnail(path, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get("/files/view", summary="An indexed image to draw a crop on, and its full size", tags=["files"],
            response_class=Response, responses=JPEG)  # fmt: skip
def view(request: Request, path: str = Query(..., description="relative to the folder")) -> Response:
    real = files_of(request).checked(path)
    try:
        decoded = folders.decode_image_bytes(real.read_bytes(), draft_min_side=VIEW_SIZE)
    except (OSError, folders.ImageFileError) as e:
        raise NotServed(f"{path!r} cannot be read now: {e}") from None
    im = decoded.image
    im.thumbnail((VIEW_SIZE, VIEW_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)  # a photo to draw on: JPEG is several times smaller than PNG
    w, h = decoded.full_size
    headers = {"X-Full-Width": str(w), "X-Full-Height": str(h), "Cache-Control": "private, max-age=60"}
    return Response(buf.getvalue(), media_type="image/jpeg", headers=headers)


def _int_field(value: str | None, name: str, default: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise FolderRequestError(f"{name} must be a whole number, got {value!r}") from None


def _score_field(value: str | None) -> float | None:
    """``""``/``None`` → no cut-off; a finite number → the cut-off; anything else → 400."""
    if value is None or not value.strip():
        return None
    try:
        v = float(value.strip())
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise FolderRequestError(f"min_score must be a number (a cosine similarity, -1..1), got {value!r}")
    return v


@router.post("/search", summary="Rank the folder's images most similar to an indexed file or an upload",
             tags=["search"], responses=ERRORS)  # fmt: skip
def search(
    request: Request,
    image: UploadFile | None = File(None, description="query image file; or give path"),
    path: str | None = Form(None, description="an indexed image of the folder (relative path)"),
    crop: str | None = Form(None, description="x0,y0,x1,y1 in full-size pixels of the query image"),
    k: str | None = Form("10", description=f"number of results, 1..{MAX_K}"),
    min_score: str | None = Form(None, description="drop results whose score is below this"),
) -> FolderSearchAnswer:
    t0 = time.perf_counter()
    files = files_of(request)
    kk = _int_field(k, "k", 10)
    if not 1 <= kk <= MAX_K:
        raise FolderRequestError(f"k must be between 1 and {MAX_K}, got {kk}")
    cut = _score_field(min_score)
    if image is not None and path:
        raise FolderRequestError("give either an image file or a path, not both")
    if image is not None:
        data = image.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise FolderRequestError(f"uploaded file exceeds the limit of {MAX_UPLOAD_BYTES:,} bytes")
        query: Any = data
    elif path:
        query = files.checked(path)
    else:
        raise FolderRequestError("give an image file (field 'image') or the path of an indexed image")
    with files.search_lock:
        found = files.coll.search(query, kk, crop=crop, min_score=cut)
    hits = [
        FolderHit(path=h.path, score=round(h.score, 6), rank=h.rank, duplicates=h.duplicates,
                  duplicate_paths=list(h.duplicate_paths),
                  thumbnail_url=thumbnail_path_url(h.path) if files.servable(h.path) else None)
        for h in found.results
    ]  # fmt: skip
    timings = {s: round(v, 3) for s, v in found.milliseconds.items()}
    timings["request"] = round((time.perf_counter() - t0) * 1000, 3)
    return FolderSearchAnswer(
        results=hits,
        collapsed=found.collapsed,
        candidates=found.candidates,
        min_score=cut,
        image_size=list(found.image_size),
        timings_ms=timings,
    )


# --------------------------------------------------------------------------- the app
async def _refused(request: Request, exc: Exception) -> JSONResponse:
    """``{"detail": ...}`` with the request's status: 404 not served, 503 busy, 400 other bad input."""
    if isinstance(exc, FolderRequestError):
        status = exc.status_code
    elif isinstance(exc, CollectionBusyError):
        status = 503
    else:
        status = 400
    return JSONResponse(status_code=status, content={"detail": str(exc)})


def create_folder_app(coll: Collection, *, allow_remote: bool = False) -> FastAPI:
    """The FastAPI app of folder mode over ``coll`` (one instance, shared by all requests).

    ``allow_remote=False`` (default): only requests addressed to 127.0.0.1 / localhost are
    answered (the ``Host`` header), so a web page elsewhere cannot reach the photos through
    DNS rebinding."""
    from .. import __version__

    app = FastAPI(
        title="vs_lib visual search: your folder",
        version=__version__,
        description=f"Search the images of {coll.folder} by image or crop. Paths are relative to the folder.",
    )
    app.state.folder = FolderFiles(coll)
    app.state.allow_remote = allow_remote
    app.add_exception_handler(CollectionError, _refused)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, limit=MAX_UPLOAD_BYTES + FORM_OVERHEAD)
    if not allow_remote:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=sorted(LOOPBACK_NAMES))
    return app


def check_folder_bind(host: str, allow_remote: bool) -> None:
    """Refuse (``ValueError``) a non-loopback address unless ``allow_remote``."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"refusing to serve your folder on {host!r}: a folder server is a single user's local tool and "
            "binds to 127.0.0.1 / localhost. Pass --allow-remote to let anyone who can reach this port see "
            "the folder's images."
        )


# --------------------------------------------------------------------------- python -m vs_lib serve --folder
def folder_main(args: argparse.Namespace, serve_app: Callable[[FastAPI, str, int], None]) -> int:
    """``serve --folder DIR``: sync the folder's collection (progress bar), then ``serve_app(app, host, port)``."""
    from .. import collection
    from ..models import torch_threads

    allow_remote = bool(getattr(args, "allow_remote", False))
    if args.local_owner or args.demo_user:
        print("error: --local-owner and --demo-user belong to the platform, not to --folder", file=sys.stderr)
        return 2
    try:
        check_folder_bind(args.host, allow_remote)  # before anything is loaded
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = args.model or "photo"
    with torch_threads(max(1, int(args.torch_threads)) if args.torch_threads else None):
        try:
            print(f"bringing the collection of {args.folder} up to date ...", flush=True)
            try:
                report = collection.index_folder(args.folder, name=args.name, model=model, progress=True)
                print(report.summary(), flush=True)
                name = report.name
            except CollectionBusyError as e:
                print(f"warning: {e}; serving the collection as last saved", file=sys.stderr)
                name = args.name
            coll = Collection.open(folder=args.folder, name=name, model=None if name else model)
            coll.index  # noqa: B018 - load the encoder and build the index before the first request
            coll.encoder  # noqa: B018
        except (CollectionError, FileNotFoundError, NotADirectoryError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        where = "anyone who can reach this port" if allow_remote else "this machine only"
        print(
            f"serving {len(coll):,} images of {coll.folder} ({coll.state.model}) on "
            f"http://{args.host}:{args.port}/  ({where}; docs: /docs)",
            flush=True,
        )
        serve_app(create_folder_app(coll, allow_remote=allow_remote), args.host, args.port)
    return 0
