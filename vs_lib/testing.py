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
    """``python -m vs_lib serve`` running as a separate process; its output goes to ``log_path``."""

    pid: int
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None  # when it is our own child

    def log(self, tail: int = 40) -> str:
        """The last ``tail`` lines the server printed."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the server."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the server writes its last snapshot), then SIGKILL if it does not exit in time."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self._wait(timeout):
            self.kill()


def _serve_argv(paths: PlatformPaths, port: int, args: tuple[str, ...]) -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(paths["model"]),
            "--index-path", str(paths["index"]), *args]  # fmt: skip


def _platform_env(paths: PlatformPaths) -> dict[str, str]:
    return {"VS_DATA_DIR": str(paths["data_dir"]), "VS_DB": str(paths["db"])}


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
    cmd = [sys.executable, "-m", "vs_lib", *_serve_argv(paths, port, args)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **_platform_env(paths)})
    server = ServerProcess(proc.pid, f"http://127.0.0.1:{port}", log, proc)
    if wait:
        wait_until_up(server, timeout)
    return server


def wait_until_up(server: ServerProcess, timeout: float = 180.0) -> None:
    """Poll ``/health`` (sleeping 0.2 s between tries) until it answers 200 or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"the server exited:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout:g} s:\n{server.log()}")


class ServerZygote:
    """A process that imports the server's libraries once, then forks a fresh server per start.

    Each server is a real, separate process running ``python -m vs_lib serve``'s code (killed
    with SIGKILL it gets no chance to clean up); only the seconds of importing torch, FAISS
    and FastAPI are paid once instead of at every restart — what makes hundreds of kills affordable.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from vs_lib.testing import _zygote_main; _zygote_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def start(
        self,
        paths: PlatformPaths,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        log_path: str | os.PathLike[str] | None = None,
        timeout: float = 180.0,
        wait: bool = True,
    ) -> ServerProcess:
        """Like :func:`start_server`, from the zygote."""
        import json

        port = port or free_port()
        log = Path(log_path) if log_path is not None else paths["data_dir"] / f"server-{port}.log"
        order = {"argv": _serve_argv(paths, port, args), "env": _platform_env(paths), "log": str(log)}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the server zygote failed: {line!r}")
        server = ServerProcess(int(line), f"http://127.0.0.1:{port}", log)
        if wait:
            wait_until_up(server, timeout)
        return server

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _zygote_main() -> None:
    """The zygote's loop: one JSON order per line → fork a server, print its pid."""
    import json

    import faiss  # noqa: F401  - what every server needs, imported once
    import torch  # noqa: F401
    import uvicorn  # noqa: F401

    from . import __main__ as cli
    from . import api, models  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    for line in sys.stdin:
        order = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the server
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 1
            try:
                fd = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.environ.update(order["env"])
                code = cli.main(order["argv"])
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(pid, flush=True)


# ---------------------------------------------------------------------- the kill drill
@dataclass
class DrillReport:
    """What :func:`kill_drill` counted. ``lost``: acknowledged uploads missing or not findable
    after the restarts; ``half_done``: unacknowledged uploads that left a row lacking its file,
    vector or search hit; ``orphaned_*``: files no row names, rows without a vector, vectors
    without a row, after the final start-up. All but the first four should be 0."""

    kills: int = 0
    kills_during_startup: int = 0
    attempted: int = 0
    acknowledged: int = 0
    unacknowledged_present: int = 0
    lost: int = 0
    half_done: int = 0
    orphaned_files: int = 0
    orphaned_rows: int = 0
    orphaned_vectors: int = 0
    seconds: float = 0.0


def drill_image(seed: int) -> bytes:
    """A 28 x 28 PNG unlike any garment and unlike every other seed's (a random 7 x 7 checkerboard)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(10_000 + seed)
    a = np.kron((rng.random((7, 7)) > 0.5).astype(np.uint8) * 255, np.ones((4, 4), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def kill_drill(
    paths: PlatformPaths,
    kills: int = 20,
    *,
    seed: int = 0,
    uploaders: int = 3,
    max_uptime: float = 1.5,
    startup_kills: float = 0.2,
    timeout: float = 180.0,
    zygote: ServerZygote | None = None,
) -> DrillReport:
    """SIGKILL a real server ``kills`` times at random moments while ``uploaders`` clients upload,
    then restart it once more and check every upload (see :class:`DrillReport`).

    A fraction ``startup_kills`` of the kills land during start-up (index replay, clean-up);
    the others ``0..max_uptime`` seconds after the first upload of that run was acknowledged,
    with uploads in flight.
    Servers are forked from ``zygote`` (one is made, and closed, when not given).
    """
    import random
    import threading

    import httpx

    rng = random.Random(seed)
    report = DrillReport()
    users = list(range(1, uploaders + 1))
    tokens = {u: issue_token(paths, u, seconds=24 * 3600.0, label="kill drill") for u in users}
    sent: dict[str, tuple[int, int]] = {}  # tag -> (owner, image seed)
    acked: dict[str, int] = {}  # tag -> image id in the 201
    lock = threading.Lock()
    counter = [0]
    t0 = time.monotonic()

    def upload_loop(url: str, user: int, stop: threading.Event, flowing: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {tokens[user]}"}) as c:
            while not stop.is_set():
                with lock:
                    counter[0] += 1
                    n = counter[0]
                tag = f"drill-{seed}-{n}"
                with lock:
                    sent[tag] = (user, n)
                try:
                    r = c.post("/images", data={"tags": tag}, files={"image": ("d.png", drill_image(n), "image/png")})
                except httpx.HTTPError:
                    return  # the server died under us
                if r.status_code == 201:
                    with lock:
                        acked[tag] = int(r.json()["image_id"])
                    flowing.set()

    own_zygote = zygote is None
    zygote = zygote or ServerZygote()
    try:
        _kill_loop(paths, kills, rng, report, zygote, users, upload_loop, timeout, max_uptime, startup_kills)
        report.attempted, report.acknowledged = len(sent), len(acked)
        _check_after_restart(paths, report, sent, acked, tokens, timeout, zygote)
    finally:
        if own_zygote:
            zygote.close()
    report.seconds = round(time.monotonic() - t0, 1)
    return report


def _kill_loop(
    paths: PlatformPaths,
    kills: int,
    rng: Any,
    report: DrillReport,
    zygote: ServerZygote,
    users: list[int],
    upload_loop: Any,
    timeout: float,
    max_uptime: float,
    startup_kills: float,
) -> None:
    import threading

    startup_s = 1.0  # how long the last start-up took (a forked server is up in about a second)
    for _ in range(kills):
        started = time.monotonic()
        server = zygote.start(paths, wait=False, timeout=timeout)
        if rng.random() < startup_kills:
            # a moment within the start-up as long as the last one took, so the kill lands in it
            time.sleep(rng.uniform(0.0, startup_s))
            report.kills_during_startup += int(server.alive())
            server.kill()
            report.kills += 1
            continue
        wait_until_up(server, timeout)
        startup_s = time.monotonic() - started
        stop, flowing = threading.Event(), threading.Event()
        threads = [threading.Thread(target=upload_loop, args=(server.url, u, stop, flowing)) for u in users]
        for t in threads:
            t.start()
        flowing.wait(timeout)  # the first upload of a fresh process is slow (lazy imports): kill only once they flow
        time.sleep(rng.uniform(0.0, max_uptime))
        server.kill()
        report.kills += 1
        stop.set()
        for t in threads:
            t.join(30)


def _check_after_restart(
    paths: PlatformPaths,
    report: DrillReport,
    sent: dict[str, tuple[int, int]],
    acked: dict[str, int],
    tokens: dict[int, str],
    timeout: float,
    zygote: ServerZygote,
) -> None:
    """Restart once more and count what :class:`DrillReport` describes."""
    import httpx

    server = zygote.start(paths, timeout=timeout)
    try:
        with contextlib.closing(database.connect(paths["db"])) as conn:
            rows = {
                str(tag): (int(i), int(owner), str(key))
                for i, owner, key, tag in conn.execute(
                    "SELECT id, owner_id, storage_key, tags FROM images WHERE tags LIKE 'drill-%'"
                )
            }
            with_vector = {int(r[0]) for r in conn.execute("SELECT image_id FROM vectors")}
            report.orphaned_vectors = conn.execute(
                "SELECT COUNT(*) FROM vectors v LEFT JOIN images i ON i.id = v.image_id WHERE i.id IS NULL"
            ).fetchone()[0]
            referenced = {str(r[0]) for r in conn.execute("SELECT storage_key FROM images WHERE split = 'upload'")}
        store = paths["data_dir"] / "objects"
        files = {p.relative_to(store).as_posix() for p in (store / "uploads").rglob("*") if p.is_file()}
        report.orphaned_files = len(files - referenced)
        report.orphaned_rows = sum(1 for i, _, _ in rows.values() if i not in with_vector)
        clients = {u: httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {t}"})
                   for u, t in tokens.items()}  # fmt: skip
        try:
            for tag, (owner, n) in sent.items():
                row = rows.get(tag)
                if tag in acked and (row is None or row[0] != acked[tag] or row[1] != owner):
                    report.lost += 1
                    continue
                if row is None:
                    continue  # never acknowledged, and left nothing: fine
                hit = clients[owner].post(
                    "/search", data={"k": "1"}, files={"image": ("q.png", drill_image(n), "image/png")}
                )
                found = hit.status_code == 200 and [x["image_id"] for x in hit.json()["results"]] == [row[0]]
                complete = found and row[2] in files and row[0] in with_vector
                if tag in acked:
                    report.lost += int(not complete)
                else:
                    report.unacknowledged_present += 1
                    report.half_done += int(not complete)
        finally:
            for c in clients.values():
                c.close()
    finally:
        server.stop()
