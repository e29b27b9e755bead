"""The HTTP service and web page: FastAPI over :class:`vs_lib.serving.SearchService`.

Endpoints (OpenAPI docs at ``/docs``):

- ``POST /search`` (multipart form): ``image`` (file) *or* ``image_id``; optional ``crop``
  (``x0,y0,x1,y1`` in pixels of the original image), ``k`` (default 10) and ``user_id``
  (the requester) → ``{"results": [{"image_id", "score", "rank", "thumbnail_url",
  "tags"}, ...], "timings_ms": {stage: ms}}``.
- ``POST /images`` (multipart form): ``image`` (file), ``user_id`` (the owner), optional
  ``tags`` and ``is_private`` → ``201 {"image_id", "thumbnail_url", "timings_ms"}``; the
  image is searchable as soon as the answer arrives.
- ``GET /images/{id}?user_id=&size=`` → the image as PNG; 404 for an unknown id and for
  another user's private image (the two are indistinguishable on purpose).
- ``GET /corpus/random?n=&user_id=`` → ``{"image_ids": [...]}`` for the page's picker.
- ``GET /health`` → status, number of indexed images, model and index kind.
- ``GET /`` → the web page (``vs_lib/static``: plain HTML/CSS/JS, nothing from the internet).

No endpoint reads or returns users' personal fields (username, age, gender, city,
country, email): the service only ever queries ``users.id`` to check that a user exists.

Bad input answers 4xx with ``{"detail": "<what was expected>"}`` and changes nothing:
400 bad field or image, 404 unknown id, 413 too large, 415 not an image, 422 a field of
the wrong type. Bodies above the upload limit are refused before they are parsed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from . import config, serving

CLI_HELP = "run the HTTP search service and web page"
STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MODELS = ("labels", "self_supervised", "clicks")
THUMB_SIZE = 96
FORM_OVERHEAD = 256 * 1024  # multipart headers and text fields on top of the file itself


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``limit`` bytes with 413, before parsing them.

    A ``Content-Length`` above the limit is refused at once; a body without one (chunked)
    is counted while it is buffered and refused as soon as it passes the limit.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                return await self._refuse(send, int(length))
            return await self.app(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit:
                return await self._refuse(send, total)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send, size: int):
        import json

        body = json.dumps({"detail": f"request body of {size:,}+ bytes exceeds the limit of {self.limit:,} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _int_or_none(value: Any, name: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise serving.ServingError(f"{name} must be an integer, got {value!r}") from None


def _bool(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise serving.ServingError(f"{name} must be true or false, got {value!r}")


def thumbnail_url(image_id: int, user_id: int | None, size: int = THUMB_SIZE) -> str:
    url = f"/images/{int(image_id)}?size={size}"
    return url if user_id is None else f"{url}&user_id={int(user_id)}"


def _read_upload(upload, limit: int) -> bytes:
    if upload is None:
        return b""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise serving.ImageTooLarge(f"uploaded file exceeds the limit of {limit:,} bytes")
    return data


def create_app(service: "serving.SearchService"):
    """The FastAPI app serving ``service`` (one service instance, shared by all requests)."""
    from . import __version__

    limit = service.embedder.max_bytes
    app = FastAPI(
        title="vs_lib visual search",
        version=__version__,
        description="Search Fashion-MNIST (and your uploads) by image. Users and their metadata are synthetic. "
        "The requester's `user_id` decides which private images they may see; no personal field is ever returned.",
    )
    app.state.service = service

    @app.exception_handler(serving.ServingError)
    async def _serving_error(request: Request, exc: serving.ServingError):
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)})

    @app.get("/", include_in_schema=False)
    def index_page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", summary="Service status")
    def health() -> dict:
        return service.health()

    @app.post("/search", summary="Rank the images most similar to an uploaded image or a corpus image")
    def search(
        image: UploadFile | None = File(None, description="query image file (JPEG, PNG, ...); or give image_id"),
        image_id: str | None = Form(None, description="id of an image already on the platform"),
        crop: str | None = Form(None, description="x0,y0,x1,y1 in pixels of the original image"),
        k: str | None = Form("10", description=f"number of results, 1..{service.max_k}"),
        user_id: str | None = Form(None, description="the requester (decides which private images are visible)"),
    ):
        t0 = time.perf_counter()
        uid = _int_or_none(user_id, "user_id")
        qid = _int_or_none(image_id, "image_id")
        data = _read_upload(image, limit) if image is not None else None
        if data is not None and qid is not None:
            raise serving.ServingError("give either an image file or an image_id, not both")
        if data is None and qid is None:
            raise serving.ServingError("give an image file (field 'image') or an image_id")
        kk = _int_or_none(k, "k")
        resp = service.search(data, image_id=qid, crop=crop, k=10 if kk is None else kk, user_id=uid)
        timings = dict(resp.timings_ms)
        timings["request"] = round((time.perf_counter() - t0) * 1000, 3)
        return {
            "results": [
                {"image_id": r.image_id, "score": round(r.score, 6), "rank": r.rank,
                 "thumbnail_url": thumbnail_url(r.image_id, uid), "tags": r.tags}
                for r in resp.results
            ],
            "timings_ms": timings,
        }

    @app.post("/images", status_code=201, summary="Upload an image: stored, indexed, searchable at once")
    def upload(
        image: UploadFile | None = File(None, description="the image file"),
        user_id: str | None = Form(None, description="the owner"),
        tags: str | None = Form("", description="comma-separated manual tags"),
        is_private: str | None = Form("false", description="true: only the owner can see and find it"),
    ):
        uid = _int_or_none(user_id, "user_id")
        if uid is None:
            raise serving.ServingError("user_id (the owner) is required")
        if image is None:
            raise serving.ServingError("an image file (field 'image') is required")
        data = _read_upload(image, limit)
        res = service.upload(data, owner_id=uid, tags=tags or "", is_private=_bool(is_private, "is_private"))
        return {"image_id": res.image_id, "thumbnail_url": thumbnail_url(res.image_id, uid), "timings_ms": res.timings_ms}

    @app.get("/images/{image_id}", summary="The image as PNG (404 for another user's private image)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def get_image(
        image_id: int,
        user_id: int | None = Query(None, description="the requester"),
        size: int | None = Query(None, description="longer side in pixels, 8..1024"),
    ):
        png = service.image_png(image_id, user_id, size)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/corpus/random", summary="Random visible images, for a picker")
    def random_images(
        n: int = Query(12, description="how many, 1..200"),
        user_id: int | None = Query(None),
        seed: int | None = Query(None),
    ) -> dict:
        return {"image_ids": service.random_ids(n, user_id, seed)}

    app.add_middleware(BodyLimitMiddleware, limit=limit + FORM_OVERHEAD)
    return app


# --------------------------------------------------------------------------- command line
def cli_add_arguments(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model", default=None,
                        help=f"encoder name in data/models/ or a path to a .pt file "
                             f"(default: the first of {', '.join(DEFAULT_MODELS)} that exists)")
    parser.add_argument("--index-kind", "--index", dest="index_kind", default="flat",
                        help="VectorIndex kind (flat, ivf, hnsw, milvus, ...; default flat)")
    parser.add_argument("--index-path", type=Path, default=None,
                        help="index directory (default data/index/<model>-<kind>); rebuilt if made by another encoder")
    parser.add_argument("--db", type=Path, default=None, help="platform database (default data/visual_search.db)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads per request (default 1: requests run in parallel instead)")


def resolve_model(name: str | None) -> Path:
    """A model name (``data/models/<name>.pt``) or path → an existing file, with a clear error."""
    if name is not None:
        p = Path(name)
        if p.suffix == ".pt" and p.exists():
            return p
        p = config.models_dir() / f"{name}.pt"
        if p.exists():
            return p
        raise FileNotFoundError(f"no encoder {name!r}: expected {p} or a path to a .pt file")
    for n in DEFAULT_MODELS:
        p = config.models_dir() / f"{n}.pt"
        if p.exists():
            return p
    raise FileNotFoundError(
        f"no trained encoder in {config.models_dir()} (looked for {', '.join(n + '.pt' for n in DEFAULT_MODELS)}); "
        "train one with `python -m vs_lib train --positives labels` or pass --model PATH"
    )


def cli_main(args) -> int:
    import uvicorn

    try:
        import torch

        torch.set_num_threads(max(1, int(args.torch_threads)))
    except ImportError:  # pragma: no cover
        pass
    try:  # one query at a time per request thread: OpenMP teams only add spinning under load
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    model_path = resolve_model(args.model)
    print(f"loading encoder {model_path}, bringing the {args.index_kind} index up to date ...", flush=True)
    service = serving.SearchService.from_paths(model_path, index_kind=args.index_kind, db_path=args.db,
                                               index_path=args.index_path)
    h = service.health()
    print(f"serving {h['images_indexed']:,} images with {h['model']} ({h['index_kind']}) on "
          f"http://{args.host}:{args.port}/  (docs: /docs)", flush=True)
    app = create_app(service)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    service.close()
    return 0
