"""The on-disk format every backend shares: checksummed data files, then the manifest.

A saved index is a directory: data files named ``<role>-<sha256[:16]>.<suffix>`` (written
beside their final name, fsynced, renamed) and ``manifest.json`` (:class:`Manifest`), which
names them with their sha256 and is written **last**.  A save killed at any point leaves
the previous manifest pointing at the previous, untouched files; the next complete save
deletes the files no manifest names any more — never a file that the manifest now on disk
names (another process may have saved after us) nor one written after this save began
(another save may be under way).  Processes that save one directory take turns through
:func:`folder_lock` (``python -m vs_lib index`` and the search service do).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import config
from ..locks import FolderBusy, folder_lock
from .errors import IndexCorruptedError, IndexMismatchError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DATA_FILE = re.compile(r"^[a-z]+-[0-9a-f]{16}\.[a-z]+$")  # <role>-<sha256[:16]>.<suffix>

__all__ = [
    "MANIFEST",
    "FolderBusy",
    "Manifest",
    "OpenOptions",
    "folder_lock",
    "load_npy",
    "write_checksummed",
    "write_npy",
]


@dataclass(frozen=True)
class OpenOptions:
    """How to open a saved index: ``mmap_vectors`` leaves kept float vectors on disk (FAISS
    kinds, tree); ``token`` is the credential of a Milvus server (never saved)."""

    mmap_vectors: bool = False
    token: str | None = None


# ---------------------------------------------------------------------- the manifest
@dataclass
class Manifest:
    """``manifest.json`` of a saved index: what it is, which encoder made it, its data files.

    ``files``: role → ``{"name", "sha256"}`` of each data file in the directory; ``extra``:
    backend-specific top-level fields (Milvus: ``uri_is_local``).
    """

    kind: str
    dim: int
    metric: str
    count: int
    fingerprint: str | None
    params: dict[str, Any]
    files: dict[str, dict[str, str]]
    trained: bool = True
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    saved_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    REQUIRED: ClassVar[tuple[str, ...]] = ("kind", "dim", "metric", "count", "files")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """The manifest of a saved index directory (no data read)."""
        folder = Path(path)
        mpath = folder / MANIFEST
        if not folder.exists():
            raise FileNotFoundError(f"no saved index at {folder}")
        if not mpath.exists():
            raise FileNotFoundError(
                f"{folder} holds no {MANIFEST}: not a saved index (or its first save never finished)"
            )
        try:
            doc = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexCorruptedError(f"{mpath} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise IndexCorruptedError(f"{mpath} is not a JSON object")
        for key in cls.REQUIRED:
            if key not in doc:
                raise IndexCorruptedError(f"{mpath} lacks the field {key!r}")
        known = {
            "kind",
            "dim",
            "metric",
            "count",
            "fingerprint",
            "params",
            "files",
            "trained",
            "versions",
            "format_version",
            "saved_at",
        }
        try:
            return cls(
                kind=str(doc["kind"]),
                dim=int(doc["dim"]),
                metric=str(doc["metric"]),
                count=int(doc["count"]),
                fingerprint=doc.get("fingerprint"),
                params=dict(doc.get("params") or {}),
                files=dict(doc["files"]),
                trained=bool(doc.get("trained", True)),
                versions=dict(doc.get("versions") or {}),
                format_version=int(doc.get("format_version", FORMAT_VERSION)),
                saved_at=str(doc.get("saved_at", "")),
                extra={k: v for k, v in doc.items() if k not in known},
            )
        except (TypeError, ValueError) as e:
            raise IndexCorruptedError(f"{mpath} has a malformed field: {e}") from None

    def check(self, path: Path, expected_dim: int | None = None, expected_fingerprint: str | None = None) -> None:
        """Refuse (``IndexMismatchError``) an index built for another dimension or encoder."""
        if expected_dim is not None and self.dim != int(expected_dim):
            raise IndexMismatchError(
                f"index at {path} has dimension {self.dim}, but the encoder in use produces {expected_dim}; "
                "rebuild the index"
            )
        if expected_fingerprint is not None and self.fingerprint != expected_fingerprint:
            raise IndexMismatchError(
                f"index at {path} was built with encoder fingerprint {self.fingerprint!r}, "
                f"not {expected_fingerprint!r} (the encoder in use); rebuild the index"
            )

    def verified_files(self, folder: Path, required: tuple[str, ...] = ()) -> dict[str, Path]:
        """role → path of every data file, each checked against its sha256 (``required``: roles
        the backend cannot do without)."""
        absent = [role for role in required if role not in self.files]
        if absent:
            raise IndexCorruptedError(f"{folder / MANIFEST} names no {' or '.join(absent)} file")
        out: dict[str, Path] = {}
        for role, info in self.files.items():
            f = folder / info["name"]
            if not f.exists():
                raise IndexCorruptedError(f"{f} named by the manifest is missing")
            if config.sha256_file(f) != info["sha256"]:
                raise IndexCorruptedError(f"{f} fails its sha256 checksum: the file is corrupted or was modified")
            out[role] = f
        return out

    def to_json(self) -> dict[str, Any]:
        doc = {
            "format_version": self.format_version,
            "kind": self.kind,
            "dim": self.dim,
            "metric": self.metric,
            "count": self.count,
            "fingerprint": self.fingerprint,
            "params": self.params,
            "trained": self.trained,
            "files": self.files,
            "versions": self.versions,
            "saved_at": self.saved_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return {**self.extra, **doc}

    def write(self, folder: Path) -> None:
        """Write ``folder/manifest.json`` atomically: the step that makes a save visible."""
        config.write_json_atomic(folder / MANIFEST, self.to_json())

    def remove_unreferenced(self, folder: Path) -> None:
        """Delete data files of earlier saves that no manifest names any more.

        Kept: the files this manifest names, those the manifest now on disk names (written by
        another process after ours, it is the one a reader opens), and any file newer than
        this save's own files (a save of another process under way, its manifest not yet written).
        """
        keep = {info["name"] for info in self.files.values()}
        own = [folder / name for name in keep if (folder / name).exists()]
        began = min((f.stat().st_mtime for f in own), default=None)
        with contextlib.suppress(FileNotFoundError, IndexCorruptedError):
            keep |= {info["name"] for info in Manifest.read(folder).files.values()}
        for f in folder.iterdir():
            if f.name in keep or not DATA_FILE.match(f.name):
                continue
            try:
                if began is not None and f.stat().st_mtime >= began:
                    continue
                f.unlink()
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------------- data files
def write_checksummed(folder: Path, stem: str, suffix: str, writer: Callable[[Path], None]) -> dict[str, str]:
    """Write a data file via ``writer(tmp)``, then rename it to ``<stem>-<sha16><suffix>``.

    Returns the manifest entry ``{"name", "sha256"}``.  A kill leaves at most a stray
    ``.partial`` file; files named by the current manifest are never overwritten.
    """
    partial = folder / f".{stem}.partial"
    with config.atomic_path(partial) as tmp:  # fsync + rename: .partial is complete or absent
        writer(tmp)
    sha = config.sha256_file(partial)
    name = f"{stem}-{sha[:16]}{suffix}"
    os.replace(partial, folder / name)
    return {"name": name, "sha256": sha}


def write_npy(folder: Path, stem: str, arr: np.ndarray) -> dict[str, str]:
    """:func:`write_checksummed` for one NumPy array (no pickles)."""

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return write_checksummed(folder, stem, ".npy", writer)


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """A saved array; ``IndexCorruptedError`` if it cannot be parsed."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise IndexCorruptedError(f"cannot read {path}: {e}") from None
