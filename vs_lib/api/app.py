"""``create_app(service)``: the FastAPI app, assembled from one router per area."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ..serving import SearchService, ServingError
from . import images, pages, search
from .middleware import FORM_OVERHEAD, BodyLimitMiddleware

DESCRIPTION = (
    "Search Fashion-MNIST (and your uploads) by image. Users and their metadata are synthetic. "
    "The requester's `user_id` decides which private images they may see; no personal field is ever returned."
)


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    """A refused request: its HTTP status and ``{"detail": "<what was expected>"}``."""
    status = exc.status_code if isinstance(exc, ServingError) else 500
    return JSONResponse(status_code=status, content={"detail": str(exc)})


def create_app(service: SearchService) -> FastAPI:
    """The FastAPI app serving ``service`` (one service instance, shared by all requests)."""
    from .. import __version__

    app = FastAPI(title="vs_lib visual search", version=__version__, description=DESCRIPTION)
    app.state.service = service
    app.add_exception_handler(ServingError, _serving_error)
    app.include_router(pages.router)
    app.include_router(search.router)
    app.include_router(images.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, limit=service.embedder.max_bytes + FORM_OVERHEAD)
    return app
