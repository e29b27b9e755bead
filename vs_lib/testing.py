"""Fixtures shared by the tests and the smoke notebooks: a small, self-contained platform.

``build_small_platform(folder)`` makes, in ``folder`` and nowhere else, what
``python -m vs_lib serve`` needs — through the library's own code paths, so a test of the
service also tests them:

- the platform database, built by :func:`vs_lib.data.build_database` from the first
  ``n_images`` Fashion-MNIST training images (ids ``0..n_images-1``) with seeded synthetic
  users, flags and a short seed log (higher private and flagged rates than the real
  database, so that the filters have work);
- an encoder: a PCA-``dim`` projection of the pixels, fitted in a second (or the trained
  ``Encoder`` you pass), saved and loaded back exactly as a server would;
- its flat index, built by the indexing pipeline (:func:`vs_lib.serving.ensure_index`).

Point ``VS_DATA_DIR``/``VS_DB`` at the returned paths to run ``python -m vs_lib serve
--model <model> --index-path <index>`` on this platform — or let :func:`start_server` do it
(a real server process, waited for with a deadline, its log kept for the error message).
``copy_platform`` gives a test its own copy to upload into, so a shared platform is never
changed; :func:`issue_token` makes a user's API token on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from . import auth, data, database, models, serving, synthetic

DB_NAME = "visual_search.db"


class PlatformPaths(TypedDict):
    """Where a small platform lives: its folder, database, encoder file and index directory."""

    data_dir: Path
    db: Path
    model: Path
    index: Path


def build_small_platform(
    folder: str | os.PathLike[str],
    n_images: int = 3000,
    n_users: int = 40,
    *,
    seed: int = 0,
    private_rate: float = 0.1,
    flagged_rate: float = 0.03,
    n_sessions: int = 200,
    encoder: models.Encoder | None = None,
    dim: int = 64,
) -> PlatformPaths:
    """Build a platform of ``n_images`` corpus images and ``n_users`` users in ``folder`` (see the module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ds = data.load_fashion_mnist()
    n = int(min(n_images, len(ds.train_images)))
    subset = data.FashionMNIST(
        ds.train_images[:n],
        ds.train_labels[:n],
        ds.test_images[:0],
        ds.test_labels[:0],
        source=f"the first {n:,} Fashion-MNIST training images ({ds.source})",
    )
    cfg = synthetic.GeneratorConfig(
        seed=seed, n_users=n_users, n_sessions=n_sessions, private_rate=private_rate, flagged_rate=flagged_rate
    )
    db = folder / DB_NAME
    data.build_database(db, cfg, dataset=subset)
    if encoder is None:
        encoder = models.baseline_encoder("pca", train_images=subset.train_images, seed=seed, dim=dim)
    model = folder / "models" / f"{encoder.name}.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    encoder.save(model)
    encoder = models.load_encoder(model)  # exactly what a server will load
    index = folder / "index" / f"{encoder.name}-flat"
    with contextlib.closing(data.connect(db)) as conn:
        serving.ensure_index(encoder, index, "flat", conn=conn, progress=False)
    return PlatformPaths(data_dir=folder, db=db, model=model, index=index)


def open_small_platform(paths: PlatformPaths, **kwargs: Any) -> serving.SearchService:
    """A :class:`~vs_lib.serving.SearchService` over a platform made by :func:`build_small_platform`.

    Uploads go to ``<data_dir>/objects`` unless ``store_dir`` is given; other keyword
    arguments go to the service (e.g. ``dup_hamming=None``).
    """
    kwargs.setdefault("store_dir", paths["data_dir"] / "objects")
    return serving.SearchService.from_paths(
        paths["model"], db_path=paths["db"], index_path=paths["index"], progress=False, **kwargs
    )


def copy_platform(paths: PlatformPaths, folder: str | os.PathLike[str]) -> PlatformPaths:
    """A copy of a small platform in ``folder`` (database via SQLite's online backup, so a
    database in use is copied consistently), for a test that changes it."""
    src_dir, folder = paths["data_dir"], Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    new = PlatformPaths(
        data_dir=folder,
        db=folder / paths["db"].relative_to(src_dir),
        model=folder / paths["model"].relative_to(src_dir),
        index=folder / paths["index"].relative_to(src_dir),
    )
    with contextlib.closing(sqlite3.connect(paths["db"])) as src, contextlib.closing(sqlite3.connect(new["db"])) as dst:
        src.backup(dst)
    new["model"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths["model"], new["model"])
    shutil.copytree(paths["index"], new["index"])
    if (src_dir / "objects").exists():
        shutil.copytree(src_dir / "objects", folder / "objects")
    return new


def issue_token(paths: PlatformPaths, user_id: int, *, seconds: float = 3600.0, label: str = "test") -> str:
    """A new API token of ``user_id`` on the platform at ``paths`` (what ``python -m vs_lib user token`` does)."""
    with contextlib.closing(database.connect(paths["db"])) as conn:
        return auth.issue(conn, user_id, "token", seconds=seconds, label=label)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """``python -m vs_lib serve`` running as a child process; its output goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self, tail: int = 40) -> str:
        """The last ``tail`` lines the server printed."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the server."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the server writes its last snapshot), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    paths: PlatformPaths,
    *,
    port: int | None = None,
    args: tuple[str, ...] = (),
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = 180.0,
    wait: bool = True,
) -> ServerProcess:
    """Start ``python -m vs_lib serve`` on the platform at ``paths`` (loopback, a free port).

    With ``wait``, returns once ``GET /health`` answers, polling every 0.2 s until ``timeout``;
    raises ``RuntimeError`` with the server's own output if it exits or never answers (and
    then kills it). ``VS_DATA_DIR``/``VS_DB`` point at the platform, so uploads land there.
    """
    port = port or free_port()
    log = Path(log_path) if log_path is not None else paths["data_dir"] / f"server-{port}.log"
    env = {**os.environ, "VS_DATA_DIR": str(paths["data_dir"]), "VS_DB": str(paths["db"])}
    cmd = [sys.executable, "-m", "vs_lib", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--model", str(paths["model"]), "--index-path", str(paths["index"]), *args]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    if wait:
        wait_until_up(server, timeout)
    return server


def wait_until_up(server: ServerProcess, timeout: float = 180.0) -> None:
    """Poll ``/health`` (sleeping 0.2 s between tries) until it answers 200 or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout:g} s:\n{server.log()}")
