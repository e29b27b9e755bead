"""``create_app(service, policy)``: the FastAPI app, assembled from one router per area."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import auth
from ..serving import SearchService, ServingError
from . import images, pages, search, security
from .middleware import FORM_OVERHEAD, BodyLimitMiddleware
from .security import AccessPolicy

DESCRIPTION = (
    "Search Fashion-MNIST (and your uploads) by image. Users and their metadata are synthetic. "
    "The requester is whoever holds the credential: `Authorization: Bearer <token>` (make one with "
    "`python -m vs_lib user token USERNAME`) or the web page's session cookie. Anonymous requests see "
    "public images only. No personal field is ever returned."
)


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    """A refused request: its HTTP status and ``{"detail": "<what was expected>"}``."""
    status = exc.status_code if isinstance(exc, ServingError) else 500
    return JSONResponse(status_code=status, content={"detail": str(exc)})


async def _auth_error(request: Request, exc: Exception) -> JSONResponse:
    """401 with the reason, and the scheme a client should use."""
    return JSONResponse(status_code=401, content={"detail": str(exc)}, headers={"WWW-Authenticate": "Bearer"})


def create_app(service: SearchService, policy: AccessPolicy | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (one instance, shared by all requests) under ``policy``
    (default: sign-in by credential; ``AccessPolicy(local_owner=USER_ID)`` for one local owner)."""
    from .. import __version__

    policy = policy or AccessPolicy()
    app = FastAPI(title="vs_lib visual search", version=__version__, description=DESCRIPTION)
    app.state.service = service
    app.state.policy = policy
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(auth.AuthError, _auth_error)
    app.include_router(pages.router)
    app.include_router(security.router)
    app.include_router(search.router)
    app.include_router(images.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, limit=service.embedder.max_bytes + FORM_OVERHEAD)
    if not policy.requires_sign_in:  # no sign-in: answer only requests addressed to this machine
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])
    return app
