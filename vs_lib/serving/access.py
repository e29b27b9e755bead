"""Who may see what: the one visibility rule of the platform.

The ranking is the same for everyone; what a requester may see is not. An image is hidden
from a requester when it is

- **private** and not theirs: it does not exist for them (404, never 403, which would
  confirm that it exists);
- **flagged** as inappropriate: its owner may still open it and search with it, but it
  is never shown to anyone as a result — not even to its owner.

``requester_id`` is ``None`` for an anonymous request, which sees public images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HiddenReason = Literal["unknown", "private", "flagged"]


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """What the filters read from an image's database row (never its pixels)."""

    owner_id: int
    is_private: bool
    is_flagged: bool
    tags: str = ""
    storage_key: str = ""  # where its pixels are (the re-ranker drops a result whose file is gone)


def hidden_reason(meta: ImageMeta | None, requester_id: int | None, *, as_result: bool) -> HiddenReason | None:
    """Why ``requester_id`` may not see this image, or ``None`` when they may.

    ``as_result=True`` asks about showing it in a result list, ``False`` about opening it
    (``GET /images/{id}``) or searching with it by id. ``meta`` is ``None`` for an unknown id.
    """
    if meta is None:
        return "unknown"
    own = requester_id is not None and meta.owner_id == requester_id
    if meta.is_private and not own:
        return "private"
    if meta.is_flagged and (as_result or not own):
        return "flagged"
    return None
