"""Background snapshots: the in-memory index written to disk now and then, never on the request path.

Every acknowledged upload is already durable in the platform database (its row and its vector,
one transaction), so the index on disk is only a cache that makes start-up fast: at start-up
the service loads it and replays what is newer. :class:`Snapshotter` runs ``save()`` on its
own thread every ``every`` changes or ``seconds`` seconds (whichever comes first, and only
when something changed), and once more when the service closes. A failed save is logged and
retried at the next turn; it never reaches a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 256  # changes (uploads, deletions) between two snapshots at most
SNAPSHOT_SECONDS = 30.0  # and at most this long after the first unsaved change


class Snapshotter:
    """Calls ``save() -> bool`` (``False``: skipped, try again later) in the background."""

    def __init__(self, save: Callable[[], bool], *, every: int = SNAPSHOT_EVERY, seconds: float = SNAPSHOT_SECONDS):
        self._save = save
        self.every = max(1, int(every))
        self.seconds = float(seconds)
        self._changes = 0
        self._since: float | None = None  # time of the first unsaved change
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.saves = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="vs-snapshots", daemon=True)
        self._thread.start()

    def changed(self, n: int = 1) -> None:
        """Record ``n`` changes; wakes the thread when ``every`` have piled up."""
        with self._lock:
            self._changes += n
            if self._since is None:
                self._since = time.monotonic()
            due = self._changes >= self.every
        if due:
            self._wake.set()

    @property
    def unsaved(self) -> int:
        return self._changes

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                wait = self.seconds if self._since is None else max(0.0, self._since + self.seconds - time.monotonic())
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.run_once()

    def run_once(self) -> bool:
        """Save now when anything changed; returns whether a snapshot was written."""
        with self._lock:
            pending, self._changes, self._since = self._changes, 0, None
        if not pending:
            return False
        try:
            done = bool(self._save())
        except Exception:  # a snapshot is an optimisation: log, retry at the next turn
            log.exception("snapshot of the index failed; retrying later")
            done = False
            self.failures += 1
        if not done:  # put the changes back; the next try comes a full period later
            with self._lock:
                self._changes += pending
                self._since = time.monotonic()
        else:
            self.saves += 1
        return done

    def close(self, *, final: bool = True) -> None:
        """Stop the thread; with ``final``, write one last snapshot of what changed."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        if final:
            self.run_once()
