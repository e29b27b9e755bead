"""Where simulated interactions are kept: a database of their own, never the platform's.

The platform database (``data/visual_search.db``) holds what the platform logged; a
simulation is an experiment about it, so its impressions and clicks go to a separate
*simulated-interactions database* (default ``config.data_dir()/simulations/<name>.db``)
with the platform's ``interactions`` columns and a ``meta`` table saying what it is.
:func:`log_interactions` refuses to write into a platform database.

Clicks are what training with click positives reads: :func:`read_click_log` returns the
``(query_image_id, clicked_image_id)`` pairs of any log (a simulated one, or the platform's
own seed log) and a fingerprint of them, so a changed log is recognised.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config
from .clicks import SimulationError
from .simulate import LOG_COLUMNS

__all__ = ["ClickLog", "log_interactions", "open_log", "read_click_log", "read_log", "simulation_db_path"]

KIND = "simulated-interactions"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS interactions (
    id                 INTEGER PRIMARY KEY,
    user_id            INTEGER NOT NULL,
    query_image_id     INTEGER NOT NULL,
    displayed_image_id INTEGER NOT NULL,
    position           INTEGER NOT NULL CHECK (position >= 1),
    type               TEXT NOT NULL CHECK (type IN ('impression', 'click')),
    lat                REAL CHECK (lat BETWEEN -90 AND 90),
    lon                REAL CHECK (lon BETWEEN -180 AND 180),
    timestamp          INTEGER NOT NULL CHECK (timestamp >= 0),
    session_id         INTEGER,
    dwell_seconds      REAL CHECK (dwell_seconds IS NULL OR dwell_seconds >= 0),
    source             TEXT NOT NULL CHECK (source LIKE 'simulation:%'),
    synthetic          INTEGER NOT NULL DEFAULT 1 CHECK (synthetic = 1),
    CHECK (type = 'click' OR dwell_seconds IS NULL)
);
CREATE INDEX IF NOT EXISTS idx_sim_source ON interactions(source, type);
"""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def simulation_db_path(name: str) -> Path:
    """``config.data_dir()/simulations/<name>.db``: where the simulation ``name`` logs."""
    if not _NAME.match(name) or ".." in name:
        raise SimulationError(f"a simulation name is letters, digits, '_', '-' and '.', got {name!r}")
    return config.data_dir() / "simulations" / f"{name}.db"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _refuse_platform(path: Path) -> None:
    """A simulated log never goes into a platform database (one with an ``images`` table)."""
    if path.exists() and path.resolve() == config.db_path().resolve():
        raise SimulationError(f"{path} is the platform database; simulated interactions go to a database of their own")
    if path.exists():
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = _tables(conn)
        if "images" in tables or "users" in tables:
            raise SimulationError(
                f"{path} is a platform database; simulated interactions go to a database of their own"
            )


def open_log(path: str | os.PathLike[str], *, readonly: bool = True) -> sqlite3.Connection:
    """Open a simulated-interactions database (``readonly=False`` creates it if missing)."""
    p = Path(path)
    if readonly:
        if not p.exists():
            raise FileNotFoundError(f"no simulated-interactions database at {p}")
        return sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
    _refuse_platform(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(p, timeout=30)
    with conn:
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('kind', ?)", (KIND,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(int(time.time())),))
    return conn


def _unknown(conn: sqlite3.Connection, table: str, ids: Iterable[int]) -> list[int]:
    """Which of ``ids`` have no row in the platform's ``table``."""
    wanted = sorted({int(i) for i in ids})
    found: set[int] = set()
    for s in range(0, len(wanted), 900):
        chunk = wanted[s : s + 900]
        sql = f"SELECT id FROM {table} WHERE id IN ({','.join('?' * len(chunk))})"
        found.update(int(r[0]) for r in conn.execute(sql, chunk))
    return [i for i in wanted if i not in found]


def _check_ids(log: pd.DataFrame, platform_db: str | os.PathLike[str] | None) -> None:
    """Every user and image of the log exists in the platform database (read only)."""
    from .. import data

    with contextlib.closing(data.connect(platform_db, readonly=True)) as conn:
        users = _unknown(conn, "users", log["user_id"])
        images = _unknown(conn, "images", pd.concat([log["query_image_id"], log["displayed_image_id"]]))
    if users or images:
        raise SimulationError(
            f"the log names ids the platform does not have: users {users[:5]}, images {images[:5]}; nothing written"
        )


def _records(log: pd.DataFrame, offset: int) -> list[tuple[object, ...]]:
    rows = log[LOG_COLUMNS].copy()
    rows["session_id"] = rows["session_id"] + int(offset)

    def plain(v: object) -> object:
        if isinstance(v, float) and math.isnan(v):
            return None
        item = getattr(v, "item", None)
        return item() if callable(item) else v

    return [tuple(plain(v) for v in r) for r in rows.itertuples(index=False, name=None)]


def log_interactions(
    log: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    replace: bool = False,
    platform_db: str | os.PathLike[str] | None = None,
) -> int:
    """Append a simulated log to the simulated-interactions database ``path`` (one transaction).

    Returns the rows written.  The log's users and images must exist in the platform
    database ``platform_db`` (default ``config.db_path()``, only read); otherwise nothing is
    written.  Session ids are shifted past the largest one stored, so sessions stay distinct
    across runs; ``replace=True`` first deletes the rows of the log's ``source`` values (a
    re-run swaps its own rows instead of piling up copies).  ``path`` may not be a platform
    database.
    """
    missing = [c for c in LOG_COLUMNS if c not in log.columns]
    if missing:
        raise SimulationError(f"log lacks interaction columns {missing}")
    if not log["source"].astype(str).str.startswith("simulation:").all() or not (log["synthetic"] == 1).all():
        raise SimulationError("only simulated, synthetic rows (source 'simulation:<name>', synthetic=1) are logged")
    _check_ids(log, platform_db)
    with contextlib.closing(open_log(path, readonly=False)) as conn:
        offset = conn.execute("SELECT COALESCE(MAX(session_id), 0) FROM interactions").fetchone()[0]
        records = _records(log, offset)
        with conn:
            if replace:
                sources = sorted(set(map(str, log["source"])))
                conn.execute(f"DELETE FROM interactions WHERE source IN ({', '.join('?' * len(sources))})", sources)
            conn.executemany(
                f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) VALUES ({', '.join('?' * len(LOG_COLUMNS))})",
                records,
            )
    return len(records)


def read_log(path: str | os.PathLike[str], sources: Sequence[str] | None = None) -> pd.DataFrame:
    """The interactions stored at ``path`` (all, or those of ``sources``), in insertion order."""
    where, args = _where(sources)
    with contextlib.closing(open_log(path)) as conn:
        return pd.read_sql_query(f"SELECT * FROM interactions{where} ORDER BY id", conn, params=args)


def _where(sources: Sequence[str] | None, *, clicks: bool = False) -> tuple[str, list[str]]:
    parts, args = (["type = 'click'"] if clicks else []), []
    if sources is not None:
        if not sources:
            raise SimulationError("sources is empty: name at least one, or pass None for all")
        parts.append(f"source IN ({', '.join('?' * len(sources))})")
        args = [str(s) for s in sources]
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


@dataclass(frozen=True)
class ClickLog:
    """The clicks of one interaction log, as training positives.

    ``pairs`` ``(m, 2)`` int64: ``(query_image_id, clicked_image_id)`` in log order;
    ``fingerprint``: 16 hex digits of SHA-256 over ``pairs`` — equal pairs, equal fingerprint,
    and any change to them changes it.
    """

    path: Path
    pairs: np.ndarray
    fingerprint: str
    sources: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.pairs)


def read_click_log(path: str | os.PathLike[str], sources: Sequence[str] | None = None) -> ClickLog:
    """The clicks of the log at ``path`` as ``(query, clicked)`` pairs and their fingerprint.

    ``path``: a simulated-interactions database, or a platform database (its seed log) —
    both have the ``interactions`` columns; ``sources``: only these ``source`` values.
    Opened read-only; ``FileNotFoundError`` when there is no database at ``path``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no interaction log at {p}")
    where, args = _where(sources, clicks=True)
    with contextlib.closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)) as conn:
        if "interactions" not in _tables(conn):
            raise SimulationError(f"{p} has no interactions table")
        rows = conn.execute(f"SELECT query_image_id, displayed_image_id FROM interactions{where} ORDER BY id", args)
        pairs = np.asarray(rows.fetchall(), dtype=np.int64).reshape(-1, 2)
    h = hashlib.sha256(np.ascontiguousarray(pairs).astype("<i8").tobytes())
    h.update(str(pairs.shape).encode())
    return ClickLog(p, pairs, h.hexdigest()[:16], tuple(sources) if sources is not None else None)
