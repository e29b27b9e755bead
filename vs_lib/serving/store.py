"""The platform as the search service sees it: database rows, visibility checks and the object store.

Everything the service reads or writes outside the index goes through :class:`PlatformStore`:
image metadata for the filters, user checks, pixels (by storage key, through
:func:`vs_lib.data.load_pixels`) and the storage half of an upload (file + row, one
transaction). SQLite connections are opened per thread, since a connection must not be
used by two threads at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import config, data
from .access import ImageMeta, hidden_reason
from .errors import NotFound

SQL_CHUNK = 900  # ids per "IN (...)" query: below SQLite's limit on bound parameters


@dataclass(frozen=True)
class StagedUpload:
    """An upload whose file is stored and whose row is inserted, not yet committed."""

    image_id: int
    storage_key: str


class PlatformStore:
    """The platform database ``db_path`` (default ``config.db_path()``) and object store ``store_dir``
    (default ``data.objects_dir()``), where uploads are kept under ``uploads/``."""

    def __init__(self, db_path: str | os.PathLike[str] | None = None, store_dir: str | os.PathLike[str] | None = None):
        self.db_path = Path(db_path) if db_path is not None else config.db_path()
        self.store_dir = Path(store_dir) if store_dir is not None else data.objects_dir()
        self._local = threading.local()
        self._open: list[sqlite3.Connection] = []
        self._open_lock = threading.Lock()

    # ------------------------------------------------------------------ connections
    @property
    def conn(self) -> sqlite3.Connection:
        """The calling thread's connection (opened on first use, foreign keys enforced)."""
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            c = data.connect(self.db_path)  # a clear FileNotFoundError when the database is missing
            self._local.conn = c
            with self._open_lock:
                self._open.append(c)
        return c

    def close(self) -> None:
        """Close every thread's connection (the store reopens on next use)."""
        with self._open_lock:
            for c in self._open:
                c.close()
            self._open.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ reads
    def image_meta(self, ids: Iterable[int]) -> dict[int, ImageMeta]:
        """``{id: ImageMeta}`` for the ids that exist (unknown ids are simply absent)."""
        ids = [int(i) for i in ids]
        out: dict[int, ImageMeta] = {}
        for s in range(0, len(ids), SQL_CHUNK):
            chunk = ids[s : s + SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, owner_id, is_private, is_flagged, tags FROM images WHERE id IN ({marks})"
            for i, owner, private, flagged, tags in self.conn.execute(sql, chunk):
                out[int(i)] = ImageMeta(int(owner), bool(private), bool(flagged), tags or "")
        return out

    def check_user(self, user_id: int | None) -> None:
        """``NotFound`` unless ``user_id`` is ``None`` (anonymous) or a known user. Reads ``users.id`` only."""
        if user_id is None:
            return
        if self.conn.execute("SELECT 1 FROM users WHERE id = ?", (int(user_id),)).fetchone() is None:
            raise NotFound(f"unknown user_id {user_id}")

    def visible(self, image_id: int, requester_id: int | None) -> ImageMeta:
        """The metadata of an image the requester may open; ``NotFound`` otherwise, worded exactly
        as for an id that never existed, so a refusal does not reveal that the image exists."""
        meta = self.image_meta([image_id]).get(int(image_id))
        if meta is None or hidden_reason(meta, requester_id, as_result=False) is not None:
            raise NotFound(f"unknown image_id {image_id}")
        return meta

    def storage_keys(self, ids: Sequence[int]) -> list[str]:
        """The storage key of every id, in order; ``NotFound`` for an unknown id."""
        keys: dict[int, str] = {}
        for s in range(0, len(ids), SQL_CHUNK):
            chunk = [int(i) for i in ids[s : s + SQL_CHUNK]]
            sql = f"SELECT id, storage_key FROM images WHERE id IN ({','.join('?' * len(chunk))})"
            keys.update((int(i), str(k)) for i, k in self.conn.execute(sql, chunk))
        missing = [int(i) for i in ids if int(i) not in keys]
        if missing:
            raise NotFound(f"unknown image_id {missing[0]}")
        return [keys[int(i)] for i in ids]

    def corpus_batches(self, batch: int = 8192) -> Iterator[tuple[list[int], np.ndarray]]:
        """``(ids, images)`` of every corpus image (recognised by its storage key) in batches;
        ``images`` is uint8 ``(n, 28, 28)``."""
        rows = self.conn.execute("SELECT id, storage_key FROM images ORDER BY id").fetchall()
        corpus = [(int(i), str(k)) for i, k in rows if data.is_corpus_key(k)]
        for s in range(0, len(corpus), batch):
            ids, keys = zip(*corpus[s : s + batch], strict=True)
            yield list(ids), np.stack(self.load_keys(keys))

    def load_keys(self, storage_keys: Sequence[str]) -> list[np.ndarray]:
        """Pixels of storage keys: uint8 ``(H, W)`` or ``(H, W, 3)`` (corpus arrays or object-store files)."""
        return data.load_pixels_many(storage_keys, store_dir=self.store_dir)

    def open(self, image_id: int, requester_id: int | None) -> np.ndarray:
        """Pixels of an image the requester may open (:meth:`visible`), else ``NotFound``."""
        self.visible(image_id, requester_id)
        return self.pixels([image_id])[0]

    def pixels(self, ids: Sequence[int]) -> list[np.ndarray]:
        """Pixels of images by id, through their storage keys (no visibility check)."""
        return self.load_keys(self.storage_keys(ids))

    # ------------------------------------------------------------------ writes
    @contextmanager
    def new_upload(self, img: Image.Image, *, owner_id: int, tags: str, is_private: bool) -> Iterator[StagedUpload]:
        """Store ``img`` as a PNG in the object store and insert its row, in one transaction.

        The caller indexes the image inside the block. When the block exits cleanly the row is
        committed; on any exception the row is rolled back and the file deleted, then the
        exception propagates. Uploads are serialised by the caller.
        """
        key = f"{data.UPLOAD_PREFIX}{uuid.uuid4().hex}.png"
        path = data.object_path(key, self.store_dir)
        conn = self.conn
        try:
            with config.atomic_path(path) as tmp:  # never a half-written file under its final name
                img.save(tmp, format="PNG")
            image_id = data.insert_image(conn, owner_id=owner_id, storage_key=key, tags=tags, is_private=is_private)
            yield StagedUpload(image_id, key)
            conn.commit()
        except BaseException:
            conn.rollback()
            path.unlink(missing_ok=True)
            raise
