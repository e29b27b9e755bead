"""Indexing a folder incrementally: ``index_folder(folder)`` and ``python -m vs_lib index --folder DIR``.

One sync, in three passes of increasing cost:

1. **scan** (:func:`vs_lib.folders.scan_folder`): path, size and modification time of every
   image file — no file is opened, so a folder where nothing changed costs only this;
2. **hash**: the bytes of each new or changed file (by size + mtime) are hashed (SHA-256).
   A hash the collection already knows is a moved, renamed, copied or merely touched file:
   its vector is reused without decoding anything;
3. **embed**: the remaining files are read again, hashed again (so the vector always
   belongs to the bytes it was computed from: a file changed between the passes is embedded
   as it is now), decoded and embedded — by :func:`vs_lib.scale.files.embed_files`, in this process
   or as a Ray Data job.  Each batch's vectors are saved under ``pending/`` at once, so an
   interrupted sync loses at most one batch and the next run picks up where it stopped.

Files gone from the folder are dropped.  Unusable files (empty, corrupt, truncated,
decompression bombs, vanished) are skipped and listed, never fatal.  The new state is
saved only at the end (:meth:`CollectionState.save`): until then the previous collection
stays loadable.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import config, folders
from .store import (
    CollectionError,
    CollectionState,
    FileRecord,
    adapted_model_path,
    collection_dir,
    collections_dir,
    default_name,
    find_collection,
    lock,
)

__all__ = [
    "SyncReport",
    "add_index_arguments",
    "default_name",
    "index_folder",
    "index_main",
    "load_model",
    "open_state",
]


@dataclass
class SyncReport:
    """What one sync did.  Counts of files: ``new``, ``changed`` (new content at a known path),
    ``moved`` (known content at a new path: moved, renamed or copied), ``touched`` (new
    mtime, same content), ``removed``, ``unchanged``; ``embedded`` (decoded and run through
    the encoder), ``reused`` (vectors taken from the previous state or an interrupted run);
    ``skipped`` ``(path, reason)`` found by the scan or unreadable, ``failed`` ``(path, size,
    mtime_ns, reason)`` read but not decodable (retried only once they change); ``ignored``
    non-image files; ``seconds``; ``saved``
    (False when nothing changed and nothing was written)."""

    name: str
    folder: str
    model: str
    total: int
    new: int = 0
    changed: int = 0
    moved: int = 0
    touched: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, int, int, str]] = field(default_factory=list)
    ignored: int = 0
    seconds: float = 0.0
    saved: bool = False
    path: str = ""

    def summary(self) -> str:
        """Two lines for people; the skipped files follow, one per line."""
        head = (
            f"collection {self.name!r} ({self.model}): {self.total} images from {self.folder}\n"
            f"  {self.new} new, {self.changed} changed, {self.moved} moved/renamed, {self.touched} touched, "
            f"{self.removed} removed, {self.unchanged} unchanged; {self.embedded} embedded, "
            f"{self.reused} vectors reused; {self.ignored} other files ignored; {self.seconds:.2f} s"
        )
        bad = self.all_skipped()
        if bad:
            head += f"\n  skipped {len(bad)} file(s):" + "".join(f"\n    {p}: {why}" for p, why in bad)
        return head

    def all_skipped(self) -> list[tuple[str, str]]:
        """Every file left out, ``(path, reason)``, by path."""
        return sorted(self.skipped + [(p, why) for p, _, _, why in self.failed])


# --------------------------------------------------------------------------- encoders by name
class ModelHandle:
    """An encoder by name, loaded only when needed: a sync where nothing changed never loads it.

    ``file_stat``: ``[path, size, mtime_ns]`` of its file; a collection made from a file
    with the same stat trusts its recorded fingerprint instead of loading the weights.
    """

    def __init__(self, name: str, path: Path | None, encoder: Any = None):
        self.name, self.path = name, path
        self._encoder = encoder
        self._fingerprint: str | None = None
        self._dim: int | None = None

    @property
    def file_stat(self) -> list[Any] | None:
        if self.path is None or not self.path.exists():
            return None
        st = self.path.stat()
        return [str(self.path), int(st.st_size), int(st.st_mtime_ns)]

    def trust(self, fingerprint: str, dim: int) -> None:
        """Take the fingerprint recorded for this very file instead of loading the weights."""
        self._fingerprint, self._dim = fingerprint, dim

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from .. import models, photo

            if self.name == "photo":
                self._encoder = photo.ensure_photo_encoder()
            elif self.path is not None:
                self._encoder = models.load_encoder(self.path)
            else:
                raise CollectionError(f"no file for the encoder {self.name!r}")
            if self._fingerprint is not None and self._encoder.fingerprint != self._fingerprint:
                raise CollectionError(f"the encoder file {self.path} changed during the sync; run index again")
        return self._encoder

    @property
    def fingerprint(self) -> str:
        return self._fingerprint or str(self.encoder.fingerprint)

    @property
    def dim(self) -> int:
        return self._dim or int(self.encoder.dim)

    def embed(self, images: Any, batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.encoder.embed(images, batch_size=batch_size), np.float32)


def resolve_model(model: str, folder: str | os.PathLike[str] | None = None) -> ModelHandle:
    """The :class:`ModelHandle` of a model name: ``"photo"`` (the ImageNet photo encoder),
    ``"adapted"`` (the folder's adapted encoder, made by ``train --folder``), the path of an
    encoder file, or ``NAME`` for ``<models_dir>/NAME.pt``."""
    from .. import photo

    if model == "photo":
        handle = ModelHandle("photo", photo.photo_model_path())
        if handle.file_stat is None:
            handle.encoder  # noqa: B018 - builds the encoder and writes its file
        return handle
    if model == "adapted":
        if folder is None:
            raise CollectionError("the adapted model belongs to a folder: pass --folder")
        path = adapted_model_path(folder)
        if not path.exists():
            raise CollectionError(
                f"no adapted model for {folder} yet: run `python -m vs_lib train --folder {folder} "
                "--positives self_supervised` first"
            )
        return ModelHandle("adapted", path)
    path = Path(model)
    if not (path.suffix == ".pt" and path.exists()):
        path = config.models_dir() / f"{model}.pt"
    if not path.exists():
        raise CollectionError(
            f"no encoder {model!r} (looked for {path}); use photo, adapted, a file or a trained model"
        )
    return ModelHandle(model, path)


def load_model(model: str, folder: str | os.PathLike[str] | None = None) -> tuple[Any, Path | None]:
    """``(encoder, file)`` for a model name (see :func:`resolve_model`), loaded."""
    handle = resolve_model(model, folder)
    return handle.encoder, handle.path


def open_state(
    folder: str | os.PathLike[str] | None = None, name: str | None = None, model: str | None = None
) -> CollectionState:
    """The saved state of a collection, found by ``name`` or by the ``folder`` it indexes."""
    if name is not None:
        try:
            return CollectionState.read(collection_dir(name))
        except FileNotFoundError:
            raise CollectionError(f"no collection named {name!r} under {collections_dir()}") from None
    if folder is None:
        raise CollectionError("name a collection (--name) or the folder it indexes (--folder)")
    info = find_collection(folder, model)
    if info is None:
        raise CollectionError(f"{folder} is not indexed yet: run `python -m vs_lib index --folder {folder}`")
    return CollectionState.read(collection_dir(info.name))


# --------------------------------------------------------------------------- the pending cache
def _pending_dir(root: Path, fingerprint: str) -> Path:
    return root / "pending" / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def _read_pending(folder: Path) -> dict[str, tuple[np.ndarray, int]]:
    """sha256 → (vector, pHash) saved by an interrupted sync with the same encoder."""
    cache: dict[str, tuple[np.ndarray, int]] = {}
    for part in sorted(folder.glob("*.npz")):
        with contextlib.suppress(OSError, ValueError, KeyError), np.load(part, allow_pickle=False) as z:
            for h, ph, v in zip(z["sha256"], z["phash"], z["vectors"], strict=True):
                cache[str(h)] = (np.asarray(v, np.float32), int(ph))
    return cache


def _write_pending(folder: Path, part: Any) -> None:
    ok = part.ok
    if not ok.any():
        return
    with config.atomic_path(folder / f"{time.time_ns()}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            sha256=np.array([h for h, good in zip(part.sha256, ok, strict=True) if good]),
            phash=part.phash[ok],
            vectors=part.embeddings[ok],
        )


# --------------------------------------------------------------------------- the sync
def _hash_file(folder: Path, path: str) -> tuple[str, folders.FileStat]:
    raw, st = folders.read_file(folder, path)
    return hashlib.sha256(raw).hexdigest(), st


def _plan(
    scan: folders.FolderScan, prev: CollectionState | None, report: SyncReport, progress: bool
) -> tuple[list[tuple[FileRecord, int]], list[tuple[folders.FileStat, str, bool]]]:
    """Passes 1-2: ``kept`` (record, row of the previous vectors) and ``to_embed`` (stat, sha256, path was known)."""
    from tqdm.auto import tqdm

    by_path = {r.path: (i, r) for i, r in enumerate(prev.records)} if prev else {}
    by_sha = {r.sha256: i for i, r in enumerate(prev.records)} if prev else {}
    failed = {p: (size, mtime, why) for p, size, mtime, why in prev.failed} if prev else {}
    kept: list[tuple[FileRecord, int]] = []
    to_hash = []
    for f in scan.files:
        hit = by_path.get(f.path)
        if hit and (hit[1].size, hit[1].mtime_ns) == (f.size, f.mtime_ns):
            kept.append((hit[1], hit[0]))
            report.unchanged += 1
        elif f.path in failed and failed[f.path][:2] == (f.size, f.mtime_ns):  # unusable last time, unchanged since
            report.failed.append((f.path, f.size, f.mtime_ns, failed[f.path][2]))
        else:
            to_hash.append(f)
    to_embed: list[tuple[folders.FileStat, str, bool]] = []
    for f in tqdm(to_hash, desc="hash new/changed files", unit="file", disable=not progress or not to_hash):
        try:
            sha, st = _hash_file(scan.folder, f.path)
        except FileNotFoundError:
            report.skipped.append((f.path, "deleted before it could be read"))
            continue
        except (OSError, folders.ImageFileError) as e:
            why = str(e) if isinstance(e, folders.ImageFileError) else f"cannot be read ({type(e).__name__})"
            report.skipped.append((f.path, why))
            continue
        known = f.path in by_path
        row = by_sha.get(sha)
        if row is not None and prev is not None:  # known content: moved, renamed, copied or touched
            kept.append((FileRecord(f.path, st.size, st.mtime_ns, sha, prev.records[row].phash), row))
            if known and by_path[f.path][1].sha256 == sha:
                report.touched += 1
            else:
                report.moved += 1
        else:
            to_embed.append((st, sha, known))
    scanned = {f.path for f in scan.files}
    still_here = {r.sha256 for r, _ in kept}  # a moved file's old path is not counted as removed
    report.removed = sum(1 for p, (_, r) in by_path.items() if p not in scanned and r.sha256 not in still_here)
    return kept, to_embed


def _embed_new(
    encoder: Any,
    scan: folders.FolderScan,
    to_embed: list[tuple[folders.FileStat, str, bool]],
    pending: Path,
    report: SyncReport,
    **embed_kwargs: Any,
) -> list[tuple[FileRecord, np.ndarray]]:
    """Pass 3: vectors of an interrupted run are reused, the rest embedded (each batch saved to ``pending``)."""
    from ..scale.files import embed_files

    cache = _read_pending(pending) if pending.exists() else {}
    rows: list[tuple[FileRecord, np.ndarray]] = []
    known = {st.path: was_known for st, _, was_known in to_embed}
    todo = []
    for st, sha, _ in to_embed:
        if sha in cache:
            vec, ph = cache[sha]
            rows.append((FileRecord(st.path, st.size, st.mtime_ns, sha, ph), vec))
            report.reused += 1
        else:
            todo.append(st.path)
    if todo:
        pending.mkdir(parents=True, exist_ok=True)
        result = embed_files(
            encoder, scan.folder, todo, on_batch=lambda part: _write_pending(pending, part), **embed_kwargs
        )
        stats = {st.path: st for st, _, _ in to_embed}
        for i, path in enumerate(result.paths):
            if result.errors[i]:
                report.failed.append((path, stats[path].size, stats[path].mtime_ns, result.errors[i]))
                continue
            rec = FileRecord(path, int(result.size[i]), int(result.mtime_ns[i]), result.sha256[i], int(result.phash[i]))
            rows.append((rec, result.embeddings[i]))
            report.embedded += 1
    for rec, _ in rows:
        if known[rec.path]:
            report.changed += 1
        else:
            report.new += 1
    return rows


def _previous_state(root: Path, name: str, folder: Path, handle: ModelHandle) -> CollectionState | None:
    """The saved state of the collection when its vectors can be reused by ``handle``'s encoder."""
    prev = None
    with contextlib.suppress(FileNotFoundError):
        prev = CollectionState.read(root)
    if prev is None:
        return None
    if prev.folder != str(folder):
        raise CollectionError(f"the collection {name!r} indexes {prev.folder}, not {folder}: choose another --name")
    if handle.file_stat is not None and prev.model_file == handle.file_stat:
        handle.trust(prev.fingerprint, prev.dim)  # the very encoder file of last time: no need to load it
    if prev.fingerprint != handle.fingerprint:
        return None  # another encoder: vectors of two models never mix
    return prev


def _save_if_changed(
    root: Path,
    name: str,
    folder: Path,
    model: str,
    handle: ModelHandle,
    prev: CollectionState | None,
    kept: list[tuple[FileRecord, int]],
    new_rows: list[tuple[FileRecord, np.ndarray]],
    report: SyncReport,
) -> None:
    """Write the new state (atomically, through ``CollectionState.save``) unless nothing changed."""
    changed = prev is None or bool(report.removed) or len(kept) != report.unchanged or bool(new_rows)
    same_notes = prev is not None and (prev.skipped, prev.failed, prev.model_file) == (
        report.skipped,
        report.failed,
        handle.file_stat,
    )
    if not changed and same_notes:
        return
    old = [(r, prev.vectors[i]) for r, i in kept] if prev is not None else []
    rows = sorted(old + new_rows, key=lambda rv: rv[0].path)
    state = CollectionState(
        name,
        str(folder),
        model,
        handle.fingerprint,
        handle.dim,
        [r for r, _ in rows],
        report.skipped,
        report.failed,
        handle.file_stat,
    )
    state.set_vectors(np.stack([v for _, v in rows]))
    state.save(root)
    report.saved = True


def index_folder(
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    model: str = "photo",
    engine: str = "inprocess",
    address: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    encoder: Any = None,
) -> SyncReport:
    """Bring the collection of ``folder`` up to date (see the module doc) and save it.

    ``name``: default :func:`default_name`; ``model``: see :func:`resolve_model` (or pass an
    ``encoder`` object, which then names itself); ``engine``: ``"inprocess"`` or ``"ray"``
    (``address`` for a cluster).  A different encoder than the saved one re-embeds every
    file.  Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a bad folder and
    :class:`CollectionError` for a folder without a usable image; nothing is written then.
    """
    t0 = time.perf_counter()
    scan = folders.scan_folder(folder)
    if not scan.files:
        listed = (
            f" ({len(scan.skipped)} unusable, {len(scan.ignored)} other files)" if scan.skipped or scan.ignored else ""
        )
        raise CollectionError(f"no image files ({folders.FORMATS}) under {scan.folder}{listed}")
    if encoder is None:
        handle = resolve_model(model, scan.folder)
    else:
        model = getattr(encoder, "name", model)
        handle = ModelHandle(model, None, encoder)
    name = name or default_name(scan.folder, model)
    root = collection_dir(name)
    with lock(root):
        prev = _previous_state(root, name, scan.folder, handle)
        report = SyncReport(name, str(scan.folder), model, 0, skipped=list(scan.skipped), ignored=len(scan.ignored))
        kept, to_embed = _plan(scan, prev, report, progress)
        pending = _pending_dir(root, handle.fingerprint)
        new_rows = _embed_new(
            handle,
            scan,
            to_embed,
            pending,
            report,
            engine=engine,
            encoder_path=handle.path,
            address=address,
            batch_size=batch_size,
            progress=progress,
        )
        report.reused += report.moved + report.touched
        report.total = len(kept) + len(new_rows)
        report.path = str(root)
        if report.total == 0:
            raise CollectionError(f"none of the image files under {scan.folder} could be used:\n" + report.summary())
        report.failed.sort()
        _save_if_changed(root, name, scan.folder, model, handle, prev, kept, new_rows, report)
        for part in pending.glob("*.npz") if report.saved and pending.exists() else []:
            part.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- python -m vs_lib index --folder
def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``index`` for a folder of the user's own images."""
    g = parser.add_argument_group("a folder of your own images (a collection)")
    g.add_argument("--folder", type=Path, default=None, help="index this folder (recursively) as a collection")
    g.add_argument("--name", default=None, help="collection name (default: the folder's own name)")
    g.add_argument(
        "--engine", choices=("inprocess", "ray"), default="inprocess", help="embed in-process or as a Ray Data job"
    )
    g.add_argument("--address", default=None, help="Ray cluster address (default: start Ray on this machine)")
    g.add_argument("--json", action="store_true", help="print the sync report as JSON")


def index_main(args: argparse.Namespace) -> int:
    """``index --folder DIR``: sync the collection and print what changed (exit 2 on bad input)."""
    import sys

    from ..models import torch_threads

    try:
        with torch_threads(None):  # this process is ours: every core on a quiet machine, one on a busy one
            report = index_folder(
                args.folder,
                name=args.name,
                model=args.model or "photo",
                engine=args.engine,
                address=args.address,
                progress=not args.json,
            )
    except (CollectionError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0
