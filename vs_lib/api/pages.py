"""The web page (``GET /``, assets under ``/static``) and the service status (``GET /health``).

The page is plain HTML/CSS/JS in ``vs_lib/static``; it loads nothing from the internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from .forms import service_of

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


class HealthAnswer(BaseModel):
    status: str
    images_indexed: int
    model: str
    fingerprint: str
    dim: int
    index_kind: str


@router.get("/", include_in_schema=False)
def index_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/health", summary="Service status", tags=["status"])
def health(request: Request) -> HealthAnswer:
    return HealthAnswer(**service_of(request).health())
