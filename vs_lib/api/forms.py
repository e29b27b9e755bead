"""Reading form fields and uploads the way the service expects, and what every router shares.

Multipart fields arrive as strings; they are parsed here so that a bad value is a 400
naming the field (``ServingError``), not FastAPI's generic 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, UploadFile
from pydantic import BaseModel

from ..serving import ImageTooLarge, SearchService, ServingError

THUMB_SIZE = 96  # longer side of the thumbnails the result grid shows, in pixels


class ErrorAnswer(BaseModel):
    """Every refusal: ``{"detail": "<what was expected>"}``."""

    detail: str


# the refusals every route may answer, documented in the OpenAPI schema
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "a bad field, image or crop"},
    401: {
        "model": ErrorAnswer,
        "description": "missing (where needed), malformed, unknown, expired or revoked credential",
    },
    403: {"model": ErrorAnswer, "description": "not yours to change, or a cookie request without its CSRF token"},
    404: {"model": ErrorAnswer, "description": "unknown id, or an image the requester may not see"},
    413: {"model": ErrorAnswer, "description": "the upload exceeds the size or pixel limit"},
    415: {"model": ErrorAnswer, "description": "not an image format the service reads"},
}


def service_of(request: Request) -> SearchService:
    """The service the app was created with (one instance, shared by all requests)."""
    service: SearchService = request.app.state.service
    return service


def int_or_none(value: Any, name: str) -> int | None:
    """``""``/``None`` → ``None``; an integer string → ``int``; anything else → 400."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise ServingError(f"{name} must be an integer, got {value!r}") from None


def parse_bool(value: Any, name: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case; empty is false); anything else → 400."""
    if value is None or value == "":
        return False
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ServingError(f"{name} must be true or false, got {value!r}")


def read_upload(upload: UploadFile | None, limit: int) -> bytes:
    """The uploaded file's bytes, reading at most ``limit + 1`` of them (413 above ``limit``)."""
    if upload is None:
        return b""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"uploaded file exceeds the limit of {limit:,} bytes")
    return data


def thumbnail_url(image_id: int, size: int = THUMB_SIZE) -> str:
    """Where a result's thumbnail is fetched — with the same credential as the search (the
    page's cookie goes along by itself; an API client sends its bearer header)."""
    return f"/images/{int(image_id)}?size={int(size)}"
