"""The indexing pipeline of the search service: uploads, deletions, reconciliation, snapshots.

validate → embed → object file → images row + vector (one transaction: the upload exists from
here) → searchable in memory; the index on disk is a snapshot written in the background, under
the index folder's lock, after reconciling with the database (rows other processes wrote).
:class:`~vs_lib.serving.facade.SearchService` is an :class:`IndexingPipeline`, which works on
the parts the facade builds (store, embedder, neighbours, caches, snapshotter, write lock).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import numpy as np
from PIL import Image

from .. import data, database
from ..locks import FolderBusy, folder_lock
from ..protocols import Encoder
from .caches import HashCache, VectorCache
from .embedding import EmbeddingService
from .errors import ServingError, as_int
from .hashing import perceptual_hash
from .neighbours import NeighbourService
from .responses import StageTimer, UploadResult
from .snapshots import Snapshotter
from .store import PlatformStore

__all__ = ["MAX_TAGS_CHARS", "Forbidden", "IndexingPipeline"]

MAX_TAGS_CHARS = 500
log = logging.getLogger(__name__)


class Forbidden(ServingError):
    """The requester may see the image but not change it."""

    status_code = 403


class IndexingPipeline:
    """Writes of the search service; one upload, deletion or reconciliation at a time (``_write_lock``)."""

    encoder: Encoder
    embedder: EmbeddingService
    neighbours: NeighbourService
    store: PlatformStore
    vectors: VectorCache
    hashes: HashCache
    snapshots: Snapshotter
    _write_lock: threading.Lock

    def _images(self, ids: Any) -> list[Image.Image]:
        raise NotImplementedError

    def upload(self, data: bytes, *, owner_id: int, tags: str = "", is_private: bool = False) -> UploadResult:
        """Validate → embed → object file → row + vector (one commit) → searchable; all or nothing.

        The new image is searchable, and durable, as soon as this returns: a kill afterwards
        loses nothing (the next start-up replays its stored vector). A kill or error before
        the commit leaves no row; its file, if written, is removed (now, or at the next start-up).
        """
        timer = StageTimer()
        if owner_id is None:
            raise ServingError("an upload needs its owner")
        self.store.check_user(owner_id)
        tags = str(tags or "")
        if len(tags) > MAX_TAGS_CHARS:
            raise ServingError(f"tags must be at most {MAX_TAGS_CHARS} characters")
        img = self.embedder.prepare(data)
        timer.lap("validate")
        emb = self.embedder.embed([img])
        phash = perceptual_hash([img])
        timer.lap("embed")
        staged = self.store.stage_object(img)
        timer.lap("store")
        committed = False
        try:
            with self._write_lock:
                image_id = self.store.commit_upload(
                    staged, owner_id=int(owner_id), tags=tags, is_private=bool(is_private),
                    fingerprint=str(self.encoder.fingerprint), vector=emb[0],
                )  # fmt: skip
                committed = True
                timer.lap("commit")
                try:
                    self.neighbours.add(emb, [image_id])
                except BaseException:
                    self.store.delete(image_id)  # take the committed upload back: nothing half-done
                    committed = False
                    raise
        except BaseException:
            if not committed:
                staged.discard()
            raise
        self.vectors.put([image_id], emb)
        self.hashes.put([image_id], phash)
        self.snapshots.changed()
        timer.lap("index")
        return UploadResult(image_id, staged.storage_key, timer.finish())

    def delete(self, image_id: int, user_id: int | None) -> None:
        """Delete an image its owner ``user_id`` asks to: row, vector, file, and at once from searches.

        ``NotFound`` for an image the requester may not see; :class:`Forbidden` for someone else's."""
        image_id = as_int(image_id, "image_id")
        meta = self.store.visible(image_id, user_id)
        if user_id is None or meta.owner_id != int(user_id):
            raise Forbidden(f"image {image_id} is not yours: only its owner can delete it")
        with self._write_lock:
            self.store.delete(image_id)
            if image_id in self.neighbours:
                self.neighbours.remove([image_id])
        self.snapshots.changed()

    def reconcile(self) -> tuple[int, int]:
        """Make the index hold exactly the database's images (rows written or deleted by other
        processes); returns ``(added, removed)``. Runs between uploads, never during one."""
        with self._write_lock, contextlib.closing(data.connect(self.store.db_path)) as conn:
            table = np.fromiter((r[0] for r in conn.execute("SELECT id FROM images")), np.int64)
            have = self.neighbours.ids()
            stale, new = np.setdiff1d(have, table), np.setdiff1d(table, have)
            if stale.size:
                self.neighbours.remove(stale.tolist())
            if new.size:
                got_ids, got = database.read_vectors(conn, str(self.encoder.fingerprint), new)
                rest = np.setdiff1d(new, got_ids)
                if rest.size:
                    got_ids = np.concatenate([got_ids, rest])
                    fresh = self.embedder.embed(self._images(rest.tolist()))
                    got = fresh if not len(got) else np.concatenate([got, fresh])
                self.neighbours.add(got, got_ids.tolist())
        return int(new.size), int(stale.size)

    def snapshot(self, lock_timeout: float = 5.0) -> bool:
        """Reconcile with the database, merge and save the index under its folder lock.

        Returns ``False`` (try later) when another process holds the lock longer than
        ``lock_timeout`` seconds — e.g. ``python -m vs_lib index`` syncing the same index."""
        path = self.neighbours.index_path
        if path is None:
            self.neighbours.merge()
            return True
        try:
            with folder_lock(path, purpose="search service snapshot", timeout=lock_timeout):
                self.reconcile()
                self.neighbours.save()
        except FolderBusy as e:
            log.info("snapshot postponed: %s", e)
            return False
        return True
