"""Who is asking, over HTTP: bearer tokens, the web page's session cookie, CSRF, sign-in and sign-out.

The requester of a request is whoever holds a credential this server issued — never a field
the client fills in (a ``user_id`` or ``owner_id`` sent in a form or the query string is
refused with 400):

- ``Authorization: Bearer <token>`` (tokens from ``python -m vs_lib user token USERNAME``),
  FastAPI's :class:`~fastapi.security.HTTPBearer`;
- the ``vs_session`` cookie set by ``POST /auth/session`` (the page's sign-in, with a token
  or a username and password): ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict``
  (other sites' requests do not carry it), ``Secure`` when served over https. A
  cookie-authenticated ``POST``/``DELETE`` must also send the session's CSRF token in the
  ``X-CSRF-Token`` header (403 otherwise); bearer requests need none, since no browser adds
  that header on its own;
- no credential: anonymous, who sees public images only.

A missing (where one is needed), malformed, unknown, expired or revoked credential is a 401
naming the problem. :class:`AccessPolicy` with a ``local_owner`` serves one person's own
collection without sign-in — allowed only on a loopback address (:func:`check_bind`).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import sqlite3
import time
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from .. import auth
from ..serving import ServingError
from .forms import ERRORS, service_of

SESSION_COOKIE = "vs_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CLAIMED_IDENTITY = ("user_id", "owner_id")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="An API token: `python -m vs_lib user token USERNAME` prints one.",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="sessionCookie",
    description=f"The web page's session, set by `POST /auth/session`; its POST/DELETE requests also send {CSRF_HEADER}.",
)


class CsrfRefused(ServingError):
    """A cookie-authenticated change without its session's CSRF token (or a sign-in from another site)."""

    status_code = 403


@dataclass(frozen=True)
class AccessPolicy:
    """How requesters are established. ``local_owner``: every request is this user, no sign-in
    (one person's own collection, served on a loopback address only)."""

    local_owner: int | None = None
    csrf_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # for the local owner's page

    @property
    def requires_sign_in(self) -> bool:
        return self.local_owner is None


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, policy: AccessPolicy) -> None:
    """Refuse (``ValueError``) to serve without sign-in on anything but a loopback address."""
    if not policy.requires_sign_in and not is_loopback(host):
        raise ValueError(
            f"refusing to serve without sign-in on {host!r}: a single local owner is allowed on "
            "127.0.0.1 / localhost only. Bind to 127.0.0.1, or serve with authentication (the default)."
        )


def policy_of(request: Request) -> AccessPolicy:
    policy: AccessPolicy = getattr(request.app.state, "policy", None) or AccessPolicy()
    return policy


def _conn(request: Request) -> sqlite3.Connection:
    return service_of(request).store.conn


def refuse_claimed_identity(request: Request) -> None:
    """400 for a ``user_id``/``owner_id`` in the query string (forms: :func:`refuse_claimed_form`)."""
    for name in CLAIMED_IDENTITY:
        if name in request.query_params:
            raise ServingError(
                f"{name} is not accepted: the requester is whoever holds the credential "
                "(Authorization: Bearer <token>, or the web page's sign-in)"
            )


async def refuse_claimed_form(request: Request) -> None:
    """400 when a form carries ``user_id`` or ``owner_id`` (the parsed form is cached on the request)."""
    if not request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form")):
        return
    form = await request.form()
    for name in CLAIMED_IDENTITY:
        if name in form:
            raise ServingError(
                f"{name} is not accepted: the requester is whoever holds the credential "
                "(Authorization: Bearer <token>, or the web page's sign-in)"
            )


def requester(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    session: str | None = Depends(cookie_scheme),
) -> int | None:
    """The user the request's credential speaks for, or ``None`` (anonymous); 401/403 as the module says."""
    refuse_claimed_identity(request)
    policy = policy_of(request)
    unsafe = request.method not in SAFE_METHODS
    if policy.local_owner is not None:
        if unsafe and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), policy.csrf_secret):
            raise CsrfRefused(f"missing or wrong {CSRF_HEADER} header (GET /auth/session gives it to the page)")
        return policy.local_owner
    if "authorization" in request.headers:
        if bearer is None or bearer.scheme.lower() != "bearer" or not bearer.credentials.strip():
            raise auth.AuthError("malformed Authorization header: expected `Authorization: Bearer <token>`")
        return auth.resolve(_conn(request), bearer.credentials.strip(), "token").user_id
    if session:
        principal = auth.resolve(_conn(request), session, "session")
        if unsafe and not auth.verify_csrf(session, request.headers.get(CSRF_HEADER)):
            raise CsrfRefused(
                f"missing or wrong {CSRF_HEADER} header: a signed-in page sends the CSRF token it got at sign-in"
            )
        return principal.user_id
    return None


def require_user(user_id: int | None = Depends(requester)) -> int:
    """The signed-in requester; 401 for an anonymous request."""
    if user_id is None:
        raise auth.AuthError(
            "sign in first: send `Authorization: Bearer <token>` (python -m vs_lib user token USERNAME) "
            "or sign in on the web page"
        )
    return user_id


# ---------------------------------------------------------------------- sign-in and sign-out
router = APIRouter(tags=["sign-in"])


class SessionAnswer(BaseModel):
    signed_in: bool
    user_id: int | None = None
    csrf_token: str | None = None  # send it as X-CSRF-Token with every POST/DELETE
    expires_at: int | None = None  # unix seconds
    sign_in_required: bool = True
    detail: str | None = None  # why a presented session is not (or no longer) valid


def _same_site(request: Request) -> None:
    """A sign-in form posted from another site is refused (login CSRF)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1].rstrip("/")
        if host != request.headers.get("host", ""):
            raise CsrfRefused(f"sign-in from another site ({origin}) refused")


@router.post(
    "/auth/session",
    summary="Sign in (token, or username + password): sets the session cookie, returns the CSRF token",
    responses=ERRORS,
)
def sign_in(
    request: Request,
    response: Response,
    token: str | None = Form(None, description="an API token (vst.…)"),
    username: str | None = Form(None, description="with password: a user who has one"),
    password: str | None = Form(None, description="with username"),
) -> SessionAnswer:
    _same_site(request)
    conn = _conn(request)
    if token:
        principal = auth.resolve(conn, token.strip(), "token")
        user_id, limit = principal.user_id, float(principal.expires_at)
    elif username and password:
        found = auth.check_password(conn, username, password)
        if found is None:
            raise auth.AuthError("wrong username or password")
        user_id, limit = found, float("inf")
    else:
        raise ServingError("give a token, or a username and a password")
    life = min(auth.credentials.DEFAULT_SESSION_HOURS * 3600.0, limit - time.time())
    session = auth.issue(conn, user_id, "session", seconds=max(1.0, life), label="web sign-in")
    principal = auth.resolve(conn, session, "session")
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=max(1, int(principal.expires_at - time.time())),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return SessionAnswer(
        signed_in=True, user_id=user_id, csrf_token=auth.csrf_token(session), expires_at=principal.expires_at
    )


@router.get(
    "/auth/session",
    summary="Who the page is signed in as, and its CSRF token",
    response_model=SessionAnswer,
    responses=ERRORS,
)
def current_session(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    session: str | None = Depends(cookie_scheme),
) -> Response:
    policy = policy_of(request)
    if policy.local_owner is not None:
        body = SessionAnswer(
            signed_in=True, user_id=policy.local_owner, csrf_token=policy.csrf_secret, sign_in_required=False
        )
        return JSONResponse(body.model_dump())
    if "authorization" in request.headers or not session:
        user_id = requester(request, bearer, None)
        return JSONResponse(SessionAnswer(signed_in=user_id is not None, user_id=user_id).model_dump())
    try:
        principal = auth.resolve(_conn(request), session, "session")
    except auth.AuthError as e:
        out = JSONResponse(SessionAnswer(signed_in=False, detail=str(e)).model_dump())
        out.delete_cookie(SESSION_COOKIE, path="/")
        return out
    body = SessionAnswer(
        signed_in=True, user_id=principal.user_id, csrf_token=auth.csrf_token(session), expires_at=principal.expires_at
    )
    return JSONResponse(body.model_dump())


@router.delete(
    "/auth/session",
    summary="Sign out: the session is revoked and its cookie cleared",
    response_model=SessionAnswer,
    responses=ERRORS,
)
def sign_out(
    request: Request, user_id: int | None = Depends(requester), session: str | None = Depends(cookie_scheme)
) -> Response:
    if session and user_id is not None:
        principal = auth.resolve(_conn(request), session, "session")
        auth.revoke(_conn(request), credential_id=principal.credential_id)
    out = JSONResponse(SessionAnswer(signed_in=False).model_dump())
    out.delete_cookie(SESSION_COOKIE, path="/")
    return out
