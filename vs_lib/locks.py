"""Inter-process locks on folders the library writes: an index directory, a collection's state.

Two processes writing one folder (``python -m vs_lib index`` beside a running server, two
notebooks) must take turns, or the second overwrites the first's work. Two helpers:

- :func:`folder_lock` — an exclusive lock (the ``filelock`` package) on ``<folder>/.lock``
  for one write: wait up to ``timeout`` seconds, then :class:`FolderBusy` names who holds it
  (pid, purpose, since when). The operating system drops the lock when its holder dies, even
  by SIGKILL, so a crash never leaves a stale lock behind. Re-entrant within one thread.
- :class:`Presence` — a *shared* lock a long-running process (a server) holds for its whole
  life; :meth:`Presence.alone` tries the exclusive one, to learn that no other process of the
  kind is alive (before removing files nobody references, say).

The lock files live in the folder passed in: pass a folder the library owns (an index
directory, a collection's state under ``config.data_dir()``), never a user's photo folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import config

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock-holder.json"
PRESENCE_NAME = ".presence"

__all__ = ["FolderBusy", "Presence", "folder_lock", "holder"]


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock for longer than we were willing to wait."""


def holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who last took ``folder``'s lock: ``{"pid", "host", "purpose", "since"}`` (``None`` if unknown)."""
    try:
        doc = json.loads((Path(folder) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"process {info.get('pid')} on {info.get('host')} ({info.get('purpose', 'writing')}, since {since})"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], *, purpose: str = "writing", timeout: float = 60.0) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the block; yields the folder.

    ``timeout``: seconds to wait (0: fail at once, ``-1``: wait for ever); then
    :class:`FolderBusy`, naming the holder, and nothing was done.
    """
    from filelock import Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock_of(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise FolderBusy(
            f"{folder} is being written by {_describe(holder(folder))}; waited {timeout:g} s. "
            "Try again when it has finished."
        ) from None
    try:
        if lock.lock_counter == 1:  # the outermost holder says who it is
            info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": time.time()}
            config.write_json_atomic(folder / HOLDER_NAME, info)
        yield folder
    finally:
        lock.release()


_LOCKS: dict[str, Any] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_of(path: Path) -> Any:
    """One ``FileLock`` per lock file and process: thread-local state, so each thread holds it on
    its own descriptor (threads exclude each other) and re-enters its own holds."""
    from filelock import FileLock

    key = os.path.abspath(path)
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = FileLock(key, thread_local=True)
        return _LOCKS[key]


class Presence:
    """A shared lock held for a process's life (``fcntl.flock``; a no-op where ``fcntl`` is missing).

    Every holder takes it shared; :meth:`alone` asks, without waiting, whether this process
    could have it exclusively — i.e. whether no *other* holder is alive.
    """

    def __init__(self, folder: str | os.PathLike[str], name: str = PRESENCE_NAME):
        self.path = Path(folder) / name
        self._fd: int | None = None

    def alone(self) -> bool:
        """True when no other process holds the presence lock (checked with a fresh descriptor)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if self._fd is not None:  # our own shared lock would count as another holder
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        finally:
            os.close(fd)
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_SH)

    def hold(self) -> Presence:
        """Take the shared lock (until :meth:`release` or the process ends)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            return self
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases its flock
            self._fd = None
