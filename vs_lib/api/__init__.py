"""The HTTP service and web page: FastAPI over :class:`vs_lib.serving.SearchService`.

Endpoints (OpenAPI docs at ``/docs``, security schemes ``bearerToken`` and ``sessionCookie``),
one router per area. The requester is whoever holds the credential (:mod:`.security`):

- ``POST /search`` (multipart form; :mod:`.search`): ``image`` (file) *or* ``image_id``;
  optional ``crop`` (``x0,y0,x1,y1`` in pixels of the original image) and ``k`` (default 10)
  → ``{"results": [{"image_id", "score", "rank", "thumbnail_url", "tags"}, ...],
  "timings_ms", "candidates", "fewer_than_k", "stop_reason"}``;
- ``POST /images`` (signed in; :mod:`.images`): ``image`` (file), optional ``tags`` and
  ``is_private`` → ``201 {"image_id", "thumbnail_url", "timings_ms"}``; the image belongs to
  the requester and is searchable, and durable, as soon as the answer arrives;
- ``GET /images/{id}?size=`` → the image as PNG; 404 for an unknown id and for another
  user's private image (the two are indistinguishable on purpose);
- ``DELETE /images/{id}`` (its owner) → 204; the row, vector and file are gone;
- ``GET /corpus/random?n=`` → ``{"image_ids": [...]}`` for the page's picker;
- ``POST|GET|DELETE /auth/session``: the page's sign-in (token, or username + password),
  who is signed in (and the CSRF token), sign-out;
- ``GET /health`` (:mod:`.pages`) → status, number of indexed images, model and index kind;
- ``GET /`` → the web page (``vs_lib/static``: plain HTML/CSS/JS, nothing from the internet).

No endpoint reads or returns users' personal fields (username, age, gender, city,
country, email).

Bad input answers 4xx with ``{"detail": "<what was expected>"}`` and changes nothing:
400 bad field or image (also a ``user_id``/``owner_id`` a client states about itself), 401
bad or missing credential, 403 not yours or no CSRF token, 404 unknown id, 413 too large,
415 not an image, 422 a field of the wrong type. Bodies above the upload limit are refused
before they are parsed (:mod:`.middleware`). ``python -m vs_lib serve`` runs it (:mod:`.cli`).

``python -m vs_lib serve --folder DIR`` serves the same page over a folder of the user's own
images instead: :func:`.folder.create_folder_app`, its own small API (paths relative to the
folder, no users), on 127.0.0.1 only unless ``--allow-remote``.
"""

from .app import create_app
from .cli import CLI_HELP, cli_add_arguments, cli_main, demo_sign_in, resolve_model, serve_app
from .forms import THUMB_SIZE, ErrorAnswer, thumbnail_url
from .middleware import FORM_OVERHEAD, BodyLimitMiddleware
from .security import CSRF_HEADER, SESSION_COOKIE, AccessPolicy, check_bind, is_loopback

__all__ = [
    "CLI_HELP",
    "CSRF_HEADER",
    "FORM_OVERHEAD",
    "SESSION_COOKIE",
    "THUMB_SIZE",
    "AccessPolicy",
    "BodyLimitMiddleware",
    "ErrorAnswer",
    "check_bind",
    "cli_add_arguments",
    "cli_main",
    "create_app",
    "demo_sign_in",
    "is_loopback",
    "resolve_model",
    "serve_app",
    "thumbnail_url",
]
