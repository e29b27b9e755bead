"""Passwords for the web page's sign-in: argon2id hashes (argon2-cffi), never the password.

:func:`set_password` stores a salted argon2id hash (the library picks salt and parameters and
keeps them inside the hash string); :func:`check_password` verifies in the time the hash takes,
whether or not the username exists, so the answer's timing does not say which usernames do.
"""

from __future__ import annotations

import sqlite3
import time

from .credentials import UnknownUser, user_id_of

MIN_LENGTH = 10
MAX_LENGTH = 1024

__all__ = ["MIN_LENGTH", "check_password", "set_password"]


def _hasher():  # type: ignore[no-untyped-def]
    from argon2 import PasswordHasher

    return PasswordHasher()


def set_password(conn: sqlite3.Connection, user_id: int, password: str) -> None:
    """Store ``password``'s argon2id hash for ``user_id`` (replacing any); commits."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValueError(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters, got {len(password)}")
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (int(user_id),)).fetchone() is None:
        raise UnknownUser(f"no user with id {user_id}")
    digest = _hasher().hash(password)
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO passwords (user_id, hash, updated_at) VALUES (?, ?, ?)",
            (int(user_id), digest, int(time.time())),
        )


_DUMMY: list[str] = []


def check_password(conn: sqlite3.Connection, username: str, password: str) -> int | None:
    """The user id when ``password`` is ``username``'s, else ``None`` (same cost either way)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    ph = _hasher()
    if not _DUMMY:
        _DUMMY.append(ph.hash("not a real password, only spends the same time"))
    try:
        user_id: int | None = user_id_of(conn, username)
    except UnknownUser:
        user_id = None
    row = None
    if user_id is not None:
        row = conn.execute("SELECT hash FROM passwords WHERE user_id = ?", (user_id,)).fetchone()
    stored = row[0] if row else _DUMMY[0]
    try:
        ph.verify(stored, password[:MAX_LENGTH])
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if ph.check_needs_rehash(stored):
        set_password(conn, int(user_id), password)  # type: ignore[arg-type]
    return user_id
