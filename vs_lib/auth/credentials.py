"""API tokens and web sessions: issued once, stored as digests, compared in constant time.

A credential is ``<prefix>.<selector>.<secret>``: ``vst`` for an API token (``Authorization:
Bearer``), ``vss`` for a web session (the cookie). The *selector* (8 random bytes, hex) finds
the row; the *secret* (32 random bytes from :mod:`secrets`, URL-safe base64) is never
stored — only its SHA-256 digest, compared with :func:`hmac.compare_digest`. A database that
leaks therefore leaks no usable credential, and a lookup's timing says nothing about the
secret. (A slow password hash would add nothing here: 256 random bits cannot be guessed.)

Every credential expires; any can be revoked. A session also has a CSRF token, derived from
its secret (HMAC-SHA256), so the server can check it without storing it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

Kind = Literal["token", "session"]
PREFIX: dict[str, str] = {"token": "vst", "session": "vss"}
KIND_OF_PREFIX = {v: k for k, v in PREFIX.items()}
SHAPE = re.compile(r"^(vst|vss)\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
DEFAULT_TOKEN_DAYS = 30
DEFAULT_SESSION_HOURS = 12
MAX_DAYS = 366

__all__ = [
    "AuthError",
    "CredentialInfo",
    "Principal",
    "csrf_token",
    "issue",
    "list_credentials",
    "resolve",
    "revoke",
    "user_id_of",
    "verify_csrf",
]


class AuthError(PermissionError):
    """A missing, malformed, unknown, expired or revoked credential (HTTP 401)."""

    status_code = 401


class UnknownUser(LookupError):
    """A username that is not in the ``users`` table."""


@dataclass(frozen=True)
class Principal:
    """Who a valid credential speaks for: the user, which credential, until when."""

    user_id: int
    credential_id: int
    kind: Kind
    expires_at: int


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as ``user list`` shows it: never its secret, never an email."""

    credential_id: int
    username: str
    kind: str
    selector: str
    label: str
    created_at: int
    expires_at: int
    revoked_at: int | None

    def state(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def user_id_of(conn: sqlite3.Connection, username: str) -> int:
    """The id of ``username``; :class:`UnknownUser` when there is none."""
    row = conn.execute("SELECT id FROM users WHERE username = ?", (str(username),)).fetchone()
    if row is None:
        raise UnknownUser(f"no user named {username!r}")
    return int(row[0])


def issue(
    conn: sqlite3.Connection,
    user_id: int,
    kind: Kind = "token",
    *,
    seconds: float | None = None,
    label: str = "",
    now: float | None = None,
) -> str:
    """A new credential for ``user_id``, returned once (only its digest is stored); commits.

    ``seconds``: lifetime (default 30 days for a token, 12 hours for a session; at most a year).
    """
    if kind not in PREFIX:
        raise ValueError(f"kind must be 'token' or 'session', got {kind!r}")
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (int(user_id),)).fetchone() is None:
        raise UnknownUser(f"no user with id {user_id}")
    life = (
        seconds
        if seconds is not None
        else (DEFAULT_TOKEN_DAYS * 86400 if kind == "token" else DEFAULT_SESSION_HOURS * 3600)
    )
    if not 0 < float(life) <= MAX_DAYS * 86400:
        raise ValueError(f"a credential lives between 1 second and {MAX_DAYS} days, got {life} s")
    now = time.time() if now is None else now
    selector, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with conn:
        if kind == "session":  # sessions are many and short: forget those long over
            conn.execute("DELETE FROM credentials WHERE kind = 'session' AND expires_at < ?", (int(now) - 86400,))
        conn.execute(
            "INSERT INTO credentials (user_id, kind, selector, digest, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (int(user_id), kind, selector, _digest(secret), str(label)[:200], int(now), int(now + float(life))),
        )
    return f"{PREFIX[kind]}.{selector}.{secret}"


_DUMMY_DIGEST = _digest("x" * 43)


def resolve(conn: sqlite3.Connection, credential: str, kind: Kind, *, now: float | None = None) -> Principal:
    """The principal ``credential`` speaks for, or :class:`AuthError` saying why not."""
    m = SHAPE.match(credential or "")
    if m is None or KIND_OF_PREFIX[m.group(1)] != kind:
        what = "an API token (vst.…)" if kind == "token" else "a session (vss.…)"
        raise AuthError(f"malformed credential: expected {what}, as `python -m vs_lib user token USERNAME` prints")
    _, selector, secret = m.groups()
    row = conn.execute(
        "SELECT id, user_id, digest, expires_at, revoked_at FROM credentials WHERE selector = ? AND kind = ?",
        (selector, kind),
    ).fetchone()
    # compare in constant time, and do the same work for an unknown selector
    ok = hmac.compare_digest(row[2] if row else _DUMMY_DIGEST, _digest(secret)) and row is not None
    if not ok or row is None:
        raise AuthError("unknown credential: it was never issued by this server, or has been deleted")
    cred_id, user_id, _, expires_at, revoked_at = row
    if revoked_at is not None:
        raise AuthError("this credential was revoked; ask for a new one")
    now = time.time() if now is None else now
    if int(expires_at) <= now:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(expires_at)))
        raise AuthError(f"this credential expired at {when}; sign in again or make a new token")
    return Principal(int(user_id), int(cred_id), kind, int(expires_at))


def revoke(
    conn: sqlite3.Connection,
    *,
    selector: str | None = None,
    credential_id: int | None = None,
    user_id: int | None = None,
    now: float | None = None,
) -> int:
    """Revoke one credential (by selector or id) or every live one of a user; returns how many; commits."""
    if sum(x is not None for x in (selector, credential_id, user_id)) != 1:
        raise ValueError("give exactly one of selector, credential_id or user_id")
    now = int(time.time() if now is None else now)
    where, arg = (
        ("selector = ?", str(selector).split(".")[-2] if selector and "." in selector else selector)
        if selector is not None
        else ("id = ?", credential_id)
        if credential_id is not None
        else ("user_id = ?", user_id)
    )
    with conn:
        cur = conn.execute(f"UPDATE credentials SET revoked_at = ? WHERE {where} AND revoked_at IS NULL", (now, arg))
    return int(cur.rowcount)


def list_credentials(conn: sqlite3.Connection, user_id: int | None = None) -> list[CredentialInfo]:
    """Every credential (of ``user_id`` when given), newest first; no secret, no email."""
    sql = (
        "SELECT c.id, u.username, c.kind, c.selector, c.label, c.created_at, c.expires_at, c.revoked_at"
        " FROM credentials c JOIN users u ON u.id = c.user_id"
    )
    args: tuple[int, ...] = ()
    if user_id is not None:
        sql, args = sql + " WHERE c.user_id = ?", (int(user_id),)
    rows = conn.execute(sql + " ORDER BY c.id DESC", args).fetchall()
    return [CredentialInfo(*r) for r in rows]


def csrf_token(session: str) -> str:
    """The CSRF token of a session credential: HMAC-SHA256 of a fixed label under its secret."""
    m = SHAPE.match(session or "")
    if m is None or m.group(1) != PREFIX["session"]:
        raise AuthError("malformed session")
    return hmac.new(m.group(3).encode("ascii"), b"vs_lib csrf v1", hashlib.sha256).hexdigest()


def verify_csrf(session: str, presented: str | None) -> bool:
    """Whether ``presented`` (the ``X-CSRF-Token`` header) is this session's CSRF token."""
    if not presented:
        return False
    try:
        expected = csrf_token(session)
    except AuthError:
        return False
    return hmac.compare_digest(expected, str(presented))
