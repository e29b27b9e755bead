"""The platform database's schema, how to open it, and how an older file is brought up to date.

Tables (SQLite, ``data/visual_search.db``):

- ``images``: one row per image, ``id INTEGER PRIMARY KEY AUTOINCREMENT`` so an id is never
  given twice, even after its row is deleted; ``storage_key`` names the pixels;
- ``users`` (``email`` is personal data: no public interface returns it) and ``interactions``;
- ``vectors``: an image's embedding per encoder fingerprint, float32 little-endian bytes,
  written in the same transaction as an uploaded image's row, so an upload is all or nothing
  (the vector index is a cache that is rebuilt from these and the pixels);
- ``credentials``: API tokens and web sessions, stored as SHA-256 digests of their secret
  half, with created / expires / revoked times (:mod:`vs_lib.auth`);
- ``passwords``: argon2id hashes for users who sign in with a password.

:func:`upgrade` migrates a database made by an earlier version in one transaction: it
rebuilds ``images`` with ``AUTOINCREMENT`` (every row, upload or corpus, keeps its id) and
adds the tables it lacks. Nothing else changes, so uploads survive it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import config

SCHEMA_VERSION = "2"

IMAGES_TABLE = """
CREATE TABLE {name} (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,                 -- never reused
    owner_id    INTEGER NOT NULL REFERENCES users(id),
    upload_time INTEGER NOT NULL CHECK (upload_time >= 0),         -- unix seconds
    tags        TEXT NOT NULL DEFAULT '',                          -- comma-separated manual tags
    is_private  INTEGER NOT NULL DEFAULT 0 CHECK (is_private IN (0, 1)),
    is_flagged  INTEGER NOT NULL DEFAULT 0 CHECK (is_flagged IN (0, 1)),  -- inappropriate
    storage_key TEXT NOT NULL UNIQUE,                              -- corpus key or object-store path
    split       TEXT NOT NULL CHECK (split IN ('train', 'test', 'upload')),
    synthetic   INTEGER NOT NULL DEFAULT 0 CHECK (synthetic IN (0, 1))  -- 1: metadata generated
);
"""
IMAGES_INDEXES = """
CREATE INDEX IF NOT EXISTS idx_images_owner ON images(owner_id);
CREATE INDEX IF NOT EXISTS idx_images_hidden ON images(id, owner_id) WHERE is_private = 1 OR is_flagged = 1;
"""
# tables added in schema version 2 (IF NOT EXISTS: the migration runs the same statements)
NEW_TABLES = """
CREATE TABLE IF NOT EXISTS vectors (
    image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,                                     -- the encoder's
    dim         INTEGER NOT NULL CHECK (dim > 0),
    vector      BLOB NOT NULL CHECK (length(vector) = 4 * dim),    -- float32, little-endian
    PRIMARY KEY (image_id, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS credentials (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('token', 'session')),
    selector    TEXT NOT NULL UNIQUE,                              -- public half, for the lookup
    digest      TEXT NOT NULL,                                     -- sha256 of the secret half
    label       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS idx_credentials_user ON credentials(user_id);
CREATE TABLE IF NOT EXISTS passwords (
    user_id    INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    hash       TEXT NOT NULL,                                      -- argon2id, salt and parameters inside
    updated_at INTEGER NOT NULL
);
"""
SCHEMA = (
    """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE users (
    id        INTEGER PRIMARY KEY,
    username  TEXT NOT NULL UNIQUE,
    age       INTEGER CHECK (age BETWEEN 13 AND 120),
    gender    TEXT CHECK (gender IN ('female', 'male', 'non-binary', 'undisclosed')),
    city      TEXT,
    country   TEXT,
    email     TEXT NOT NULL UNIQUE CHECK (email LIKE '%_@_%'),   -- personal data: never served
    synthetic INTEGER NOT NULL DEFAULT 0 CHECK (synthetic IN (0, 1))
);
"""
    + IMAGES_TABLE.format(name="images")
    + """
CREATE TABLE interactions (
    id                 INTEGER PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users(id),
    query_image_id     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    displayed_image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position           INTEGER NOT NULL CHECK (position >= 1),
    type               TEXT NOT NULL CHECK (type IN ('impression', 'click')),
    lat                REAL CHECK (lat BETWEEN -90 AND 90),
    lon                REAL CHECK (lon BETWEEN -180 AND 180),
    timestamp          INTEGER NOT NULL CHECK (timestamp >= 0),
    session_id         INTEGER,
    dwell_seconds      REAL CHECK (dwell_seconds IS NULL OR dwell_seconds >= 0),
    source             TEXT NOT NULL DEFAULT 'seed-log',
    synthetic          INTEGER NOT NULL DEFAULT 1 CHECK (synthetic IN (0, 1)),
    CHECK (type = 'click' OR dwell_seconds IS NULL)
);
-- lookups serving and evaluation need
CREATE INDEX idx_inter_query ON interactions(query_image_id, type);
CREATE INDEX idx_inter_displayed ON interactions(displayed_image_id);
CREATE INDEX idx_inter_user_time ON interactions(user_id, timestamp);
CREATE INDEX idx_inter_source ON interactions(source, type);
"""
    + IMAGES_INDEXES
    + NEW_TABLES
)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "connect",
    "has_table",
    "read_vectors",
    "upgrade",
    "write_vector",
]


def connect(path: str | os.PathLike | None = None, readonly: bool = False) -> sqlite3.Connection:
    """Open the platform database with foreign keys enforced.

    ``path`` defaults to :func:`vs_lib.config.db_path`. A missing file is an error (build
    it with ``python -m vs_lib data``), never silently created. Commits are durable
    (``synchronous = FULL``): a transaction that returned is on disk.
    """
    path = Path(path) if path is not None else config.db_path()
    if not path.exists():
        raise FileNotFoundError(f"no platform database at {path}; build it with `python -m vs_lib data`")
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _images_autoincrement(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'images'").fetchone()
    return row is not None and "AUTOINCREMENT" in row[0].upper()


def upgrade(path: str | os.PathLike | None = None) -> list[str]:
    """Bring the database at ``path`` to :data:`SCHEMA_VERSION` in one transaction; returns the
    steps taken (empty when it was current). Every row keeps its id; uploads survive."""
    path = Path(path) if path is not None else config.db_path()
    conn = connect(path)
    steps: list[str] = []
    try:
        conn.isolation_level = None  # explicit transaction: the pragma below must be outside one
        conn.execute("PRAGMA foreign_keys = OFF")  # so rebuilding images cascades into nothing
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _images_autoincrement(conn):
                conn.execute(IMAGES_TABLE.format(name="images_v2"))
                conn.execute(
                    "INSERT INTO images_v2 (id, owner_id, upload_time, tags, is_private, is_flagged, storage_key,"
                    " split, synthetic) SELECT id, owner_id, upload_time, tags, is_private, is_flagged, storage_key,"
                    " split, synthetic FROM images"
                )
                conn.execute("DROP TABLE images")
                conn.execute("ALTER TABLE images_v2 RENAME TO images")
                steps.append("images.id is AUTOINCREMENT (ids are never reused)")
            missing = [t for t in ("vectors", "credentials", "passwords") if not has_table(conn, t)]
            for statement in (IMAGES_INDEXES + NEW_TABLES).split(";"):  # one by one: executescript would commit
                if statement.strip():
                    conn.execute(statement)
            steps += [f"table {t} added" for t in missing]
            bad = conn.execute("PRAGMA foreign_key_check").fetchall()
            if bad:
                raise sqlite3.IntegrityError(f"foreign keys broken by the upgrade, e.g. {bad[:3]}; nothing changed")
            current = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if current is None or current[0] != SCHEMA_VERSION:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                steps.append(f"schema version {current[0] if current else '?'} -> {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
        # write-ahead log: readers never wait for the writer (persistent, once per file)
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
            steps.append("journal mode WAL")
    finally:
        conn.close()
    return steps


# ---------------------------------------------------------------------------------------
# vectors: embeddings by (image id, encoder fingerprint)
# ---------------------------------------------------------------------------------------
def write_vector(conn: sqlite3.Connection, image_id: int, fingerprint: str, vector: np.ndarray) -> None:
    """Store ``vector`` ``(d,)`` as the embedding of ``image_id`` by encoder ``fingerprint``; the caller commits."""
    v = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    conn.execute(
        "INSERT OR REPLACE INTO vectors (image_id, fingerprint, dim, vector) VALUES (?, ?, ?, ?)",
        (int(image_id), str(fingerprint), int(v.size), v.tobytes()),
    )


def read_vectors(
    conn: sqlite3.Connection, fingerprint: str, ids: Sequence[int] | np.ndarray | None = None, *, chunk: int = 900
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (n,) int64, vectors (n, d) float32)`` stored for ``fingerprint`` (of ``ids`` only, when
    given; ids without a vector are simply absent). Empty when the database has no ``vectors`` table."""
    if not has_table(conn, "vectors"):
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    sql = "SELECT image_id, dim, vector FROM vectors WHERE fingerprint = ?"
    rows: list[tuple[int, int, bytes]] = []
    if ids is None:
        rows = conn.execute(sql + " ORDER BY image_id", (str(fingerprint),)).fetchall()
    else:
        want = [int(i) for i in np.asarray(ids).reshape(-1)]
        for s in range(0, len(want), chunk):
            part = want[s : s + chunk]
            marks = ",".join("?" * len(part))
            rows += conn.execute(sql + f" AND image_id IN ({marks})", (str(fingerprint), *part)).fetchall()
        rows.sort()
    if not rows:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    dims = {int(r[1]) for r in rows}
    if len(dims) != 1:
        raise ValueError(f"vectors of fingerprint {fingerprint!r} have several dimensions {sorted(dims)}")
    out_ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dims.pop())
    return out_ids, vectors.astype(np.float32)
