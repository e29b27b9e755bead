"""The indexing pipeline: keep an encoder's index in line with the ``images`` table.

``sync_index(encoder, conn, index_path)`` adds every image of the table that is not yet
indexed — with the vector the platform database stores for it and this encoder (the
``vectors`` table: what an upload wrote with its row), else embedding its pixels read
through its storage key (:func:`vs_lib.data.load_pixels`: the corpus arrays for
``fashion-mnist/...`` keys, the object store for uploads) — removes indexed ids no longer in
the table, and saves.  It holds the index folder's lock
(:func:`~vs_lib.index.persistence.folder_lock`) from reading the saved index to writing the
new one, so two processes syncing one index (``python -m vs_lib index`` beside a running
server) take turns and each starts from the other's result: nothing either added is lost.
``python -m vs_lib index`` runs it for a saved encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import config, data, database
from .base import VectorIndex
from .errors import IndexMismatchError
from .factory import KINDS, create, load
from .persistence import MANIFEST, FolderBusy, folder_lock

DEFAULT_MODEL = "self_supervised"

__all__ = [
    "CLI_HELP",
    "DEFAULT_MODEL",
    "SyncResult",
    "cli_add_arguments",
    "cli_main",
    "default_index_path",
    "reconcile",
    "storage_keys",
    "sync_index",
]


@dataclass(frozen=True)
class SyncResult:
    """What a sync changed: ids ``added`` and ``removed``, the ``total`` now indexed, the ``path``."""

    added: int
    removed: int
    total: int
    path: str


def default_index_path(model_name: str = DEFAULT_MODEL, kind: str = "flat") -> Path:
    """Where the index of encoder ``model_name`` lives: ``data/index/<model>-<kind>/``."""
    safe_kind = re.sub(r"[^A-Za-z0-9_.-]+", "_", kind)
    return config.data_dir() / "index" / f"{model_name}-{safe_kind}"


def storage_keys(conn: sqlite3.Connection, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (n,) int64 sorted, storage keys (n,) object)`` of the ``images`` table.

    With ``ids``: those rows only, in the order given (``data.UnknownImageError`` names any
    id the table lacks).
    """
    rows = conn.execute("SELECT id, storage_key FROM images ORDER BY id").fetchall()
    table_ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    keys = np.array([r[1] for r in rows], dtype=object)
    if ids is None:
        return table_ids, keys
    want = np.asarray(ids, dtype=np.int64).reshape(-1)
    pos = np.searchsorted(table_ids, want)
    known = pos < len(table_ids)
    known[known] = table_ids[pos[known]] == want[known]
    if not known.all():
        raise data.UnknownImageError(f"unknown image id(s) {want[~known][:5].tolist()}")
    return want, keys[pos]


def _image_batches(keys: np.ndarray, ids: np.ndarray, batch: int) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yield ``(ids, pixels)`` chunks of ``batch`` images, each read through its storage key."""
    for s in range(0, len(ids), batch):
        yield ids[s : s + batch], [data.load_pixels(k) for k in keys[s : s + batch]]


def _open_or_create(encoder: Any, path: Path, kind: str, rebuild: bool, params: dict[str, Any]) -> VectorIndex:
    if (path / MANIFEST).exists() and not rebuild:
        idx = load(path, expected_dim=encoder.dim, expected_fingerprint=encoder.fingerprint)
        if idx.kind != kind:
            raise ValueError(f"index at {path} is of kind {idx.kind!r}, not {kind!r}")
        return idx
    return create(encoder.dim, kind, fingerprint=encoder.fingerprint, **params)


def _add_images(
    idx: VectorIndex,
    encoder: Any,
    keys: np.ndarray,
    ids: np.ndarray,
    *,
    chunk: int,
    batch_size: int,
    desc: str,
    progress: bool,
    stored: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Add ``stored`` ``(ids, vectors)`` as they are, embed and add ``ids``; an untrained index
    trains on all of them first (one add)."""
    from tqdm.auto import tqdm

    n_new = ids.size + (0 if stored is None else stored[0].size)
    if not idx.is_trained and n_new < idx.min_training_vectors():
        raise ValueError(
            f"{idx.kind} index needs at least {idx.min_training_vectors()} images to train, the table has {n_new} new"
        )
    pending_ids: list[np.ndarray] = [] if stored is None else [stored[0]]
    pending_vecs: list[np.ndarray] = [] if stored is None else [stored[1]]
    train_first = not idx.is_trained
    if pending_ids and not train_first:
        idx.add(np.concatenate(pending_vecs), np.concatenate(pending_ids))
        pending_ids, pending_vecs = [], []
    with tqdm(total=len(ids), desc=desc, unit="img", disable=not progress) as bar:
        for ids_chunk, images in _image_batches(keys, ids, chunk):
            pending_ids.append(ids_chunk)
            pending_vecs.append(np.asarray(encoder.embed(images, batch_size=batch_size), np.float32))
            bar.update(len(ids_chunk))
            if not train_first:  # a trained index takes vectors as they come
                idx.add(np.concatenate(pending_vecs), np.concatenate(pending_ids))
                pending_ids, pending_vecs = [], []
    if pending_ids:
        idx.add(np.concatenate(pending_vecs), np.concatenate(pending_ids))


def sync_index(
    encoder: Any,
    conn: sqlite3.Connection | None = None,
    index_path: str | os.PathLike[str] | None = None,
    kind: str = "flat",
    *,
    rebuild: bool = False,
    batch_size: int = 256,
    chunk: int = 4096,
    progress: bool = True,
    lock_timeout: float = 600.0,
    **params: Any,
) -> SyncResult:
    """Bring the index of ``encoder`` in line with the ``images`` table and save it.

    ``encoder``: anything with ``embed(images, batch_size)``, ``dim``, ``fingerprint`` (and
    ``name``, for the default path).  Embeds and adds every image id not yet indexed,
    removes indexed ids no longer in the table, saves atomically.  ``rebuild=True`` starts
    from an empty index (e.g. after retraining the encoder); otherwise an index built by a
    different encoder is refused (``IndexMismatchError``).  ``params``: the index kind's
    parameters, for a new index.  ``lock_timeout``: seconds to wait for another process
    writing the same index (then :class:`~vs_lib.locks.FolderBusy`, nothing changed).
    """
    own_conn = conn is None
    db = data.connect() if conn is None else conn
    try:
        name = getattr(encoder, "name", DEFAULT_MODEL)
        path = Path(index_path) if index_path is not None else default_index_path(name, kind)
        with folder_lock(path, purpose=f"sync_index ({name}, {kind})", timeout=lock_timeout):
            idx = _open_or_create(encoder, path, kind, rebuild, params)
            added, removed = reconcile(idx, encoder, db, batch_size=batch_size, chunk=chunk, progress=progress)
            if added or removed or not (path / MANIFEST).exists():
                idx.save(path)
        return SyncResult(added=added, removed=removed, total=len(idx), path=str(path))
    finally:
        if own_conn:
            db.close()


def reconcile(
    idx: VectorIndex,
    encoder: Any,
    conn: sqlite3.Connection,
    *,
    batch_size: int = 256,
    chunk: int = 4096,
    progress: bool = False,
) -> tuple[int, int]:
    """Make ``idx`` hold exactly the ids of the ``images`` table (in memory; nothing saved).

    Removes indexed ids the table lacks; adds the others with their stored vectors (the
    ``vectors`` table, for ``encoder.fingerprint``) or, where none is stored, their pixels'
    embedding. Returns ``(added, removed)``.
    """
    name = getattr(encoder, "name", DEFAULT_MODEL)
    table_ids, keys = storage_keys(conn)
    stale = np.setdiff1d(idx.ids(), table_ids)
    new = np.setdiff1d(table_ids, idx.ids())
    if stale.size:
        idx.remove(stale)
    if new.size:
        have_ids, have_vecs = database.read_vectors(conn, str(encoder.fingerprint), new)
        stored = None
        if have_ids.size and have_vecs.shape[1] == encoder.dim:
            stored = (have_ids, have_vecs)
        embed = np.setdiff1d(new, have_ids) if stored is not None else new
        _add_images(
            idx,
            encoder,
            keys[np.searchsorted(table_ids, embed)],
            embed,
            chunk=chunk,
            batch_size=batch_size,
            desc=f"indexing ({name}, {idx.kind})",
            progress=progress,
            stored=stored,
        )
    return int(new.size), int(stale.size)


# ---------------------------------------------------------------------- command line
CLI_HELP = "embed every image not yet indexed and add it to the vector index (removes deleted images)"


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help=f"encoder name, loads <models_dir>/<NAME>.pt (default {DEFAULT_MODEL}; with --folder: photo)",
    )
    parser.add_argument(
        "--kind", default="flat", help=f"index kind: one of {', '.join(KINDS)} or a FAISS factory string (default flat)"
    )
    parser.add_argument("--path", default=None, help="index directory (default data/index/<model>-<kind>)")
    parser.add_argument(
        "--rebuild", action="store_true", help="start from an empty index (after retraining the encoder)"
    )
    parser.add_argument(
        "--rebuild-stale",
        action="store_true",
        help="rebuild automatically when the saved index was made by another encoder (make index uses it)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="seconds to wait while another process (a running server's snapshot) writes the index (default 600)",
    )
    from ..collection.sync import add_index_arguments  # --folder DIR: a collection of the user's own images

    add_index_arguments(parser)


def cli_main(args: argparse.Namespace) -> int:
    from .. import models

    if getattr(args, "folder", None) is not None:  # a folder of the user's own images: vs_lib.collection
        from ..collection.sync import index_main

        return index_main(args)
    args.model = args.model or DEFAULT_MODEL

    model_path = config.models_dir() / f"{args.model}.pt"
    if not model_path.exists():
        raise FileNotFoundError(
            f"no encoder at {model_path}; train it first: python -m vs_lib train --positives {args.model}"
        )
    encoder = models.load_encoder(model_path)
    path = Path(args.path) if args.path else default_index_path(args.model, args.kind)
    conn = data.connect()
    common = {"kind": args.kind, "batch_size": args.batch_size, "lock_timeout": args.wait}
    try:
        try:
            result = sync_index(encoder, conn, path, rebuild=args.rebuild, **common)
        except IndexMismatchError as e:
            if not args.rebuild_stale:
                raise
            # the encoder was retrained: embeddings of two models are not comparable, start over
            print(f"{e}\nthe encoder changed since this index was built: rebuilding it from scratch")
            result = sync_index(encoder, conn, path, rebuild=True, **common)
    except FolderBusy as e:
        print(f"index not updated: {e}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0
