"""A collection on disk: its manifest, its vectors, where it lives, and the one-writer lock.

A collection is the index of one folder by one encoder, kept under
``config.data_dir()/collections/<name>/`` (never inside the user's folder)::

    collection.json        the manifest, written last (format, folder, model, encoder
                           fingerprint, one record per file: path, size, mtime_ns, sha256, pHash)
    vectors-<sha>.npy      (n, dim) float32 L2-normalised embeddings, row i = record i
    pending/*.npz          embeddings of a sync that was interrupted, reused by the next one
    .lock                  held by the process that is syncing

Saving writes the vectors under a new name (their checksum), then the manifest atomically,
then removes the old vectors: a process killed at any point leaves the previous manifest
and the vectors it names, so the previous collection stays loadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import config
from ..locks import FolderBusy, folder_lock

FORMAT = "vs_lib.collection"
FORMAT_VERSION = 1
MANIFEST = "collection.json"
POSTPROCESSING = ("centre", "none")

__all__ = [
    "FORMAT",
    "MANIFEST",
    "POSTPROCESSING",
    "CollectionBusyError",
    "CollectionError",
    "CollectionState",
    "FileRecord",
    "adapted_model_path",
    "collection_dir",
    "collections_dir",
    "default_name",
    "find_collection",
    "list_collections",
    "lock",
]


class CollectionError(ValueError):
    """Bad input for a collection (missing or empty folder, bad crop, ``k <= 0``, unknown path...)."""


class CollectionBusyError(CollectionError):
    """Another process is syncing the same collection."""


@dataclass(frozen=True)
class FileRecord:
    """One indexed file: ``path`` relative to the folder (POSIX), what it was when embedded
    (``size``, ``mtime_ns``), the ``sha256`` of its bytes and its 64-bit perceptual hash."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    phash: int


@dataclass
class CollectionState:
    """What a manifest holds, plus the vectors it names (loaded on first use)."""

    name: str
    folder: str
    model: str
    fingerprint: str
    dim: int
    records: list[FileRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, int, int, str]] = field(default_factory=list)  # (path, size, mtime_ns, why): not retried
    model_file: list[Any] | None = None  # [path, size, mtime_ns] of the encoder file the vectors came from
    postprocess: str = "centre"
    vectors_file: str | None = None
    vectors_sha256: str | None = None
    updated: float = 0.0
    root: Path | None = None
    _vectors: np.ndarray | None = field(default=None, repr=False)

    # ----- vectors
    @property
    def vectors(self) -> np.ndarray:
        """(n, dim) float32 L2-normalised, row i the embedding of ``records[i]`` (treat as read-only)."""
        if self._vectors is None:
            if not self.records:
                self._vectors = np.zeros((0, self.dim), np.float32)
            else:
                self._vectors = self._read_vectors()
        return self._vectors

    def _read_vectors(self) -> np.ndarray:
        assert self.root is not None and self.vectors_file is not None
        path = self.root / self.vectors_file
        raw = path.read_bytes()
        if self.vectors_sha256 and hashlib.sha256(raw).hexdigest() != self.vectors_sha256:
            raise CollectionError(f"{path} does not match its checksum in {self.root / MANIFEST}: re-run index")
        import io

        vectors = np.load(io.BytesIO(raw), allow_pickle=False)
        if vectors.shape != (len(self.records), self.dim):
            raise CollectionError(
                f"{path} holds {vectors.shape}, the manifest expects ({len(self.records)}, {self.dim})"
            )
        vectors.setflags(write=False)
        return vectors

    def set_vectors(self, vectors: np.ndarray) -> None:
        v = np.ascontiguousarray(vectors, np.float32)
        if v.shape != (len(self.records), self.dim):
            raise ValueError(f"vectors must be ({len(self.records)}, {self.dim}), got {v.shape}")
        self._vectors = v

    # ----- persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "folder": self.folder,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "postprocess": self.postprocess,
            "count": len(self.records),
            "vectors_file": self.vectors_file,
            "vectors_sha256": self.vectors_sha256,
            "updated": self.updated,
            "skipped": [list(s) for s in self.skipped],
            "failed": [list(f) for f in self.failed],
            "model_file": self.model_file,
            "files": [[r.path, r.size, r.mtime_ns, r.sha256, f"{r.phash:016x}"] for r in self.records],
        }

    @classmethod
    def read(cls, root: str | os.PathLike[str]) -> CollectionState:
        """The collection saved at ``root``; ``FileNotFoundError`` when there is none."""
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"no collection at {root}")
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
                raise CollectionError(f"{path} is not a collection manifest of version {FORMAT_VERSION}")
            records = [FileRecord(p, int(s), int(m), h, int(ph, 16)) for p, s, m, h, ph in d["files"]]
            return cls(
                name=d["name"],
                folder=d["folder"],
                model=d["model"],
                fingerprint=d["fingerprint"],
                dim=int(d["dim"]),
                records=records,
                skipped=[(str(a), str(b)) for a, b in d.get("skipped", [])],
                failed=[(str(p), int(sz), int(m), str(w)) for p, sz, m, w in d.get("failed", [])],
                model_file=d.get("model_file"),
                postprocess=d.get("postprocess", "centre"),
                vectors_file=d.get("vectors_file"),
                vectors_sha256=d.get("vectors_sha256"),
                updated=float(d.get("updated", 0.0)),
                root=root,
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, CollectionError):
                raise
            raise CollectionError(f"{path} is not a readable collection manifest: {e}") from e

    def save(self, root: str | os.PathLike[str]) -> Path:
        """Vectors under a new checksummed name, then the manifest (atomic), then old vectors removed."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        vectors = self.vectors
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, np.float32), allow_pickle=False)
        raw = buf.getvalue()
        digest = hashlib.sha256(raw).hexdigest()
        name = f"vectors-{digest[:16]}.npy"
        if not (root / name).exists():
            with config.atomic_path(root / name) as tmp:
                tmp.write_bytes(raw)
        self.vectors_file, self.vectors_sha256, self.updated, self.root = name, digest, time.time(), root
        with config.atomic_path(root / MANIFEST) as tmp:
            tmp.write_text(json.dumps(self.to_json()))
        for stale in root.glob("vectors-*.npy"):  # only the file the manifest names is kept
            if stale.name != name:
                stale.unlink(missing_ok=True)
        return root / MANIFEST


# --------------------------------------------------------------------------- where collections live
def collections_dir() -> Path:
    """``config.data_dir()/collections``."""
    return config.data_dir() / "collections"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def collection_dir(name: str) -> Path:
    """The folder of collection ``name`` (letters, digits, ``_ . -``; no path separators)."""
    if not _NAME.match(name or ""):
        raise CollectionError(
            f"a collection name is 1-100 letters, digits, '_', '.' or '-' (not starting with one of the last three), got {name!r}"
        )
    return collections_dir() / name


def safe_name(text: str) -> str:
    """A valid collection name made from ``text`` (e.g. a folder's own name)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-") or "folder"
    return cleaned[:100]


def default_name(folder: str | os.PathLike[str], model: str = "photo") -> str:
    """``<folder's own name>`` for the photo encoder, ``<folder's name>-<model>`` for another one."""
    base = safe_name(Path(folder).resolve().name)
    return base if model == "photo" else safe_name(f"{base}-{Path(model).stem}")


def adapted_model_path(folder: str | os.PathLike[str]) -> Path:
    """Where ``train --folder`` keeps the folder's adapted encoder: ``<models_dir>/folders/<name>-adapted.pt``."""
    return config.models_dir() / "folders" / f"{default_name(folder)}-adapted.pt"


@dataclass(frozen=True)
class CollectionInfo:
    """One saved collection: ``name``, its ``folder``, ``model``, file ``count``, last ``updated``."""

    name: str
    folder: str
    model: str
    count: int
    updated: float


def list_collections() -> list[CollectionInfo]:
    """Every readable collection under :func:`collections_dir`, by name."""
    out = []
    for manifest in sorted(collections_dir().glob(f"*/{MANIFEST}")):
        with contextlib.suppress(OSError, ValueError):
            d = json.loads(manifest.read_text())
            out.append(CollectionInfo(d["name"], d["folder"], d["model"], int(d["count"]), float(d["updated"])))
    return out


def find_collection(folder: str | os.PathLike[str], model: str | None = None) -> CollectionInfo | None:
    """The collection that indexes ``folder`` with ``model`` (any name); ``None`` when there is none.

    Without ``model``: the one with the photo encoder if there is one, else the most recently updated.
    """
    target = str(Path(folder).resolve())
    found = [c for c in list_collections() if c.folder == target and (model is None or c.model == model)]
    if not found:
        return None
    if model is None:
        found.sort(key=lambda c: (c.model != "photo", -c.updated))
    return found[0]


# --------------------------------------------------------------------------- one writer at a time
@contextlib.contextmanager
def lock(root: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the collection's folder lock (:func:`vs_lib.locks.folder_lock`) while syncing;
    :class:`CollectionBusyError` if another process has it."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(root, purpose="collection sync", timeout=timeout))
        except FolderBusy as e:
            raise CollectionBusyError(f"another process is updating the collection at {root}: {e}") from None
        yield


def records_as_dicts(records: list[FileRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
