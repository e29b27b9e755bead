"""The errors a caller of the search service can cause, each with the HTTP status it maps to.

Every one is raised before anything changes: a refused request leaves the database, the
object store and the index as they were.
"""

from __future__ import annotations

from typing import Any


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
    """Unknown image or user id (also: an image the requester may not see)."""

    status_code = 404


def as_int(value: Any, name: str) -> int:
    """``int(value)``, or a :class:`ServingError` naming ``name`` (an id from a request)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ServingError(f"{name} must be an integer, got {value!r}") from None
