"""Index builds cached on disk, so that a sweep re-run (or notebook 04) loads instead of rebuilding.

A build lives in ``<cache>/<key>/`` (default cache: ``config.data_dir()/cache/ann``), where
the key names the algorithm and its parameters and hashes everything the build depends on
(library versions, vs_lib's version, the task).  It is written into a temporary folder
beside it — the library's files, then ``build.json`` (build time, threads, memory) last — and
renamed into place: a killed build leaves at most a temporary folder, which the next run
removes, never a half-written build under a real key.  A build that fails to load is
deleted and rebuilt.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import config
from .algorithms import Algorithm, build_key

BUILD_FILE = "build.json"

__all__ = ["BuildCache", "BuildRecord", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``config.data_dir()/cache/ann``."""
    return config.data_dir() / "cache" / "ann"


@dataclass(frozen=True)
class BuildRecord:
    """How one index was built: ``build_seconds`` (wall time of the fit), ``build_threads``,
    ``rss_delta_kb`` (resident memory the fit added, as ann-benchmarks measures an index),
    ``index_bytes`` (its files on disk), ``memory_bytes`` (the library's own count, if any);
    ``cached``: loaded from the cache in ``load_seconds`` rather than built in this run."""

    algorithm: str
    build: dict[str, Any]
    key: str
    build_seconds: float
    build_threads: int
    rss_delta_kb: float
    index_bytes: int | None
    memory_bytes: int | None
    versions: dict[str, str]
    cached: bool = False
    load_seconds: float | None = None


def _rss_kb() -> float:
    import psutil  # type: ignore[import-untyped]

    return float(psutil.Process().memory_info().rss) / 1024


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


class BuildCache:
    """Builds indexes, or loads them from ``root`` (``None``: never cache)."""

    def __init__(self, root: Path | None = None):
        self.root = None if root is None else Path(root)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_abandoned()

    def _remove_abandoned(self) -> None:
        """Temporary folders of builds whose process is gone (killed mid-build)."""
        assert self.root is not None
        for d in self.root.glob(".*.tmp"):
            try:
                pid = int(d.name.rsplit(".", 2)[-2])
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                shutil.rmtree(d, ignore_errors=True)
            except PermissionError:
                pass  # another user's live process

    def folder(self, algorithm: Algorithm, task_signature: str) -> Path | None:
        """Where the build of ``algorithm`` lives (``None`` when it is never cached)."""
        if self.root is None or not algorithm.cacheable:
            return None
        return self.root / build_key(algorithm, task_signature)

    def get(self, algorithm: Algorithm, x: np.ndarray, task_signature: str) -> BuildRecord:
        """Load ``algorithm``'s build from the cache, else fit it on ``x`` (and cache it)."""
        folder = self.folder(algorithm, task_signature)
        if folder is not None and (folder / BUILD_FILE).exists():
            t0 = time.perf_counter()
            try:
                algorithm.load(folder, x)
                doc = json.loads((folder / BUILD_FILE).read_text())
                return BuildRecord(**{**doc, "cached": True, "load_seconds": time.perf_counter() - t0})
            except Exception:
                shutil.rmtree(folder, ignore_errors=True)
        gc.collect()
        rss0, t0 = _rss_kb(), time.perf_counter()
        algorithm.fit(x)
        seconds, rss = time.perf_counter() - t0, _rss_kb() - rss0
        record = BuildRecord(
            algorithm=algorithm.name,
            build=dict(algorithm.build),
            key=folder.name if folder is not None else algorithm.name,
            build_seconds=seconds,
            build_threads=algorithm.build_threads,
            rss_delta_kb=rss,
            index_bytes=None,
            memory_bytes=algorithm.memory_bytes(),
            versions=algorithm.versions(),
        )
        if folder is None:
            return record
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            algorithm.save(tmp)
            record = BuildRecord(**{**asdict(record), "index_bytes": _folder_bytes(tmp)})
            config.write_json_atomic(tmp / BUILD_FILE, {k: v for k, v in asdict(record).items() if k != "cached"})
            try:
                os.rename(tmp, folder)  # the commit: the build appears whole under its key
            except OSError:  # another process cached the same build meanwhile: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return record
