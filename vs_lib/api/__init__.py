"""The HTTP service and web page: FastAPI over :class:`vs_lib.serving.SearchService`.

Endpoints (OpenAPI docs at ``/docs``), one router per area:

- ``POST /search`` (multipart form; :mod:`.search`): ``image`` (file) *or* ``image_id``;
  optional ``crop`` (``x0,y0,x1,y1`` in pixels of the original image), ``k`` (default 10)
  and ``user_id`` (the requester) → ``{"results": [{"image_id", "score", "rank",
  "thumbnail_url", "tags"}, ...], "timings_ms": {stage: ms}}``.
- ``POST /images`` (multipart form; :mod:`.images`): ``image`` (file), ``user_id`` (the
  owner), optional ``tags`` and ``is_private`` → ``201 {"image_id", "thumbnail_url",
  "timings_ms"}``; the image is searchable as soon as the answer arrives.
- ``GET /images/{id}?user_id=&size=`` → the image as PNG; 404 for an unknown id and for
  another user's private image (the two are indistinguishable on purpose).
- ``GET /corpus/random?n=&user_id=`` → ``{"image_ids": [...]}`` for the page's picker.
- ``GET /health`` (:mod:`.pages`) → status, number of indexed images, model and index kind.
- ``GET /`` → the web page (``vs_lib/static``: plain HTML/CSS/JS, nothing from the internet).

No endpoint reads or returns users' personal fields (username, age, gender, city,
country, email): the service only ever queries ``users.id`` to check that a user exists.

Bad input answers 4xx with ``{"detail": "<what was expected>"}`` and changes nothing:
400 bad field or image, 404 unknown id, 413 too large, 415 not an image, 422 a field of
the wrong type. Bodies above the upload limit are refused before they are parsed
(:mod:`.middleware`). ``python -m vs_lib serve`` runs it (:mod:`.cli`).
"""

from .app import create_app
from .cli import CLI_HELP, cli_add_arguments, cli_main, resolve_model
from .forms import THUMB_SIZE, thumbnail_url
from .middleware import FORM_OVERHEAD, BodyLimitMiddleware

__all__ = [
    "CLI_HELP",
    "FORM_OVERHEAD",
    "THUMB_SIZE",
    "BodyLimitMiddleware",
    "cli_add_arguments",
    "cli_main",
    "create_app",
    "resolve_model",
    "thumbnail_url",
]
