"""Reading form fields and uploads the way the service expects, and what every router shares.

Multipart fields arrive as strings; they are parsed here so that a bad value is a 400
naming the field (``ServingError``), not FastAPI's generic 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, UploadFile

from ..serving import ImageTooLarge, SearchService, ServingError

THUMB_SIZE = 96  # longer side of the thumbnails the result grid shows, in pixels


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


def thumbnail_url(image_id: int, user_id: int | None, size: int = THUMB_SIZE) -> str:
    """Where the page fetches a result's thumbnail, as the requester."""
    url = f"/images/{int(image_id)}?size={size}"
    return url if user_id is None else f"{url}&user_id={int(user_id)}"
