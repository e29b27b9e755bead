"""The platform as the search service sees it: database rows, visibility checks and the object store.

Everything the service reads or writes outside the index goes through :class:`PlatformStore`:
image metadata for the filters, user checks, pixels (by storage key, through
:func:`vs_lib.data.load_pixels`) and the durable half of an upload. SQLite connections are
opened per thread, since a connection must not be used by two threads at once.

An upload is stored in two steps, so that a kill at any moment leaves it complete or absent:

1. :meth:`PlatformStore.stage_object` writes the PNG under ``uploads/`` (temporary name,
   fsync, rename, fsync of the folder): a kill here leaves a file no row names;
2. :meth:`PlatformStore.commit_upload` inserts the ``images`` row and its ``vectors`` row in
   one SQLite transaction — the moment the upload exists.

:meth:`PlatformStore.remove_orphans` (at start-up, when no other server shares the store)
deletes the files of step 1 that never reached step 2, under ``uploads/`` only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import config, data, database
from .access import ImageMeta, hidden_reason
from .errors import NotFound

SQL_CHUNK = 900  # ids per "IN (...)" query: below SQLite's limit on bound parameters
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedObject:
    """An upload's file, written under its final name, that no row names yet."""

    storage_key: str
    path: Path

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


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
            sql = f"SELECT id, owner_id, is_private, is_flagged, tags, storage_key FROM images WHERE id IN ({marks})"
            for i, owner, private, flagged, tags, key in self.conn.execute(sql, chunk):
                out[int(i)] = ImageMeta(int(owner), bool(private), bool(flagged), tags or "", str(key))
        return out

    def missing_objects(self, meta: Mapping[int, ImageMeta]) -> set[int]:
        """Ids among ``meta`` whose object file is gone (corpus pixels are never missing); each is logged."""
        gone = set()
        for i, m in meta.items():
            if m.storage_key and not data.is_corpus_key(m.storage_key):
                try:
                    present = data.object_path(m.storage_key, self.store_dir).is_file()
                except data.UnknownImageError:
                    present = False
                if not present:
                    gone.add(int(i))
        if gone:
            log.warning("object file missing for image(s) %s: dropped from the results", sorted(gone)[:10])
        return gone

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

    def random_visible(self, ids: np.ndarray, n: int, requester_id: int | None, seed: int | None) -> list[int]:
        """Up to ``n`` of ``ids``, drawn at random, that the requester may see as results."""
        self.check_user(requester_id)
        if len(ids) == 0:
            return []
        pick = np.random.default_rng(seed).choice(ids, size=min(len(ids), 4 * n), replace=False).tolist()
        meta = self.image_meta(pick)
        return [i for i in pick if hidden_reason(meta.get(i), requester_id, as_result=True) is None][:n]

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
        """Pixels of an image the requester may open (:meth:`visible`), else ``NotFound`` — also when
        its object file is missing (logged: the row outlived its file)."""
        self.visible(image_id, requester_id)
        try:
            return self.pixels([image_id])[0]
        except (FileNotFoundError, data.UnknownImageError) as e:
            log.warning("image %s: %s", image_id, e)
            raise NotFound(f"unknown image_id {image_id}") from None

    def pixels(self, ids: Sequence[int]) -> list[np.ndarray]:
        """Pixels of images by id, through their storage keys (no visibility check)."""
        return self.load_keys(self.storage_keys(ids))

    # ------------------------------------------------------------------ writes
    def stage_object(self, img: Image.Image) -> StagedObject:
        """Write ``img`` as a PNG under ``uploads/`` durably (temporary name, fsync, rename, fsync of the folder)."""
        key = f"{data.UPLOAD_PREFIX}{uuid.uuid4().hex}.png"
        path = data.object_path(key, self.store_dir)
        with config.atomic_path(path) as tmp:  # never a half-written file under its final name
            img.save(tmp, format="PNG")
        _fsync_dir(path.parent)
        return StagedObject(key, path)

    def commit_upload(
        self,
        staged: StagedObject,
        *,
        owner_id: int,
        tags: str,
        is_private: bool,
        fingerprint: str,
        vector: np.ndarray,
    ) -> int:
        """Insert the image row and its vector in one transaction and commit; returns the new id.

        On any error the transaction is rolled back (the caller discards the file)."""
        conn = self.conn
        try:
            image_id = data.insert_image(
                conn, owner_id=owner_id, storage_key=staged.storage_key, tags=tags, is_private=is_private
            )
            database.write_vector(conn, image_id, fingerprint, vector)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return image_id

    def delete(self, image_id: int) -> str:
        """Delete an image's row, vectors and interactions (one transaction), then its object file."""
        return data.delete_image(self.conn, image_id, store_dir=self.store_dir)

    def referenced_uploads(self) -> set[str]:
        """Storage keys under ``uploads/`` that some row names."""
        sql = "SELECT storage_key FROM images WHERE substr(storage_key, 1, ?) = ?"
        return {str(r[0]) for r in self.conn.execute(sql, (len(data.UPLOAD_PREFIX), data.UPLOAD_PREFIX))}

    def remove_orphans(self) -> int:
        """Delete files under ``uploads/`` that no row names (uploads killed before their commit, files
        of deleted images); returns how many. Call it only when no other process writes the store."""
        folder = self.store_dir / data.UPLOAD_PREFIX
        if not folder.is_dir():
            return 0
        keep = self.referenced_uploads()
        removed = 0
        for f in folder.rglob("*"):
            if f.is_file() and f.relative_to(self.store_dir).as_posix() not in keep:
                f.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d object file(s) under %s that no image row names", removed, folder)
        return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
