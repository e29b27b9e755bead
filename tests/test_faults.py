"""Crash safety and concurrent writers, with real server processes.

- the kill drill: SIGKILL a running server 20+ times at random moments (during start-up, and
  while three clients upload), restart, and account for every upload — every acknowledged
  one searchable by its owner, every other one complete or absent, nothing orphaned;
- two writers of one index: ``python -m vs_lib index`` beside a running server that takes
  uploads — both finish and nothing either added is lost; a writer that cannot get the lock
  in time refuses with a clear message;
- a save never deletes data files that the manifest on disk names (written by another process).

``benchmarks/faults.py`` runs the drill with hundreds of kills.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from vs_lib import config, locks, testing
from vs_lib import index as vi

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    return testing.build_small_platform(tmp_path_factory.mktemp("faults_platform"), 500, n_users=6, seed=4)


@pytest.fixture(scope="module")
def zygote():
    z = testing.ServerZygote()
    yield z
    z.close()


def test_sigkill_at_random_moments_loses_nothing_acknowledged(platform, tmp_path, zygote):
    paths = testing.copy_platform(platform, tmp_path / "drill")
    report = testing.kill_drill(paths, kills=20, seed=7, uploaders=3, max_uptime=1.2, zygote=zygote)
    counts = dataclasses.asdict(report)
    assert report.kills == 20 and report.acknowledged >= 20, counts  # the drill really uploaded and killed
    assert report.attempted > report.acknowledged, counts  # and some uploads were cut off mid-flight
    assert report.lost == 0 and report.half_done == 0, counts
    assert (report.orphaned_files, report.orphaned_rows, report.orphaned_vectors) == (0, 0, 0), counts


def _cli(args, paths, timeout=300):
    env = {**os.environ, "VS_DB": str(paths["db"]), "VS_DATA_DIR": str(paths["data_dir"]),
           "VS_MODELS_DIR": str(paths["model"].parent)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "vs_lib", *args], capture_output=True, text=True, env=env,
                          cwd=config.ROOT, timeout=timeout)  # fmt: skip


def test_index_command_beside_a_running_server_loses_nothing(platform, tmp_path, zygote):
    paths = testing.copy_platform(platform, tmp_path / "writers")
    token = testing.issue_token(paths, 2)
    server = zygote.start(paths, args=())
    uploaded: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def uploads():
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            n = 0
            while not stop.is_set() or n < 10:
                n += 1
                r = c.post("/images", files={"image": ("w.png", testing.drill_image(5000 + n), "image/png")})
                (uploaded.append(r.json()["image_id"]) if r.status_code == 201 else errors.append(r.text))

    try:
        # another process adds a row the server never saw (as a notebook calling data.insert_image would)
        conn = sqlite3.connect(paths["db"])
        (paths["data_dir"] / "objects" / "uploads").mkdir(parents=True, exist_ok=True)
        (paths["data_dir"] / "objects" / "uploads" / "side.png").write_bytes(testing.drill_image(9999))
        conn.execute(
            "INSERT INTO images (owner_id, upload_time, storage_key, split) VALUES (3, 0, 'uploads/side.png', 'upload')"
        )
        conn.commit()
        side = conn.execute("SELECT MAX(id) FROM images").fetchone()[0]
        conn.close()
        t = threading.Thread(target=uploads)
        t.start()
        out = _cli(["index", "--model", paths["model"].stem, "--path", str(paths["index"])], paths)
        stop.set()
        t.join(120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert not errors and len(uploaded) >= 10
        # the server picks up the row the index command added at its next snapshot, and keeps its own
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            hit = c.post("/search", data={"k": "1"}, files={"image": ("q.png", testing.drill_image(9999), "image/png")})
            assert hit.status_code == 200
    finally:
        server.stop()  # SIGTERM: its last snapshot, under the folder lock
    conn = sqlite3.connect(paths["db"])
    table = {r[0] for r in conn.execute("SELECT id FROM images")}
    conn.close()
    on_disk = set(vi.load(paths["index"]).ids().tolist())
    assert set(uploaded) | {side} <= on_disk and on_disk == table  # nobody's additions were dropped


def test_a_writer_that_cannot_get_the_lock_refuses_clearly(platform, tmp_path):
    paths = testing.copy_platform(platform, tmp_path / "busy")
    before = sorted(p.name for p in paths["index"].iterdir())
    with locks.folder_lock(paths["index"], purpose="a test holding the index"):
        out = _cli(["index", "--model", paths["model"].stem, "--path", str(paths["index"]), "--wait", "0.5"], paths)
    assert out.returncode == 3
    assert (
        "index not updated" in out.stderr
        and "a test holding the index" in out.stderr
        and str(os.getpid()) in out.stderr
    )
    assert sorted(p.name for p in paths["index"].iterdir()) == before


def test_save_never_deletes_files_that_the_manifest_on_disk_names(tmp_path):
    """Process A saves; process B saves after it; A's clean-up of its earlier files must spare B's."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    folder = tmp_path / "idx"
    a = vi.create(8, "flat").add(x[:100], np.arange(100))
    a.save(folder)
    manifest_a = vi.Manifest.read(folder)
    b = vi.create(8, "flat").add(x, np.arange(300))
    b.save(folder)  # another writer's save: the manifest on disk now names B's files
    manifest_a.remove_unreferenced(folder)  # A finishing a later save, which would name only A's files
    assert len(vi.load(folder)) == 300  # B's files are intact and still verify
