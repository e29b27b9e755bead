"""The indexing pipeline with a tiny fake encoder: incremental sync, pixels through the
storage key, storage keys of ids, IVF training on the first run, and the command line."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from vs_lib import index as vi
from vs_lib.index import IndexMismatchError


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Small arrays: one OpenMP thread avoids spin-waiting on a shared machine."""
    with vi.faiss_threads(1):
        yield


# ---------------------------------------------------------------------- indexing pipeline
@pytest.fixture(scope="module")
def fashion_mnist():
    """The corpus, from local files only (this machine has no internet)."""
    from vs_lib import data

    try:
        return data.load_fashion_mnist(download=False)
    except data.DataNotFoundError as e:
        pytest.skip(f"needs the Fashion-MNIST files (Debian's dataset-fashion-mnist package): {str(e).splitlines()[0]}")


class FakeEncoder:
    """Deterministic stand-in for models.Encoder: mean-pooled 4x4 blocks, L2-normalised."""

    name = "fake"
    dim = 49
    fingerprint = "fake-0001"

    def embed(self, images, batch_size=256):
        out = []
        for im in images:
            im = np.asarray(im, np.float32)
            if im.ndim == 3:
                im = im.mean(axis=2)
            im = im[:28, :28]
            im = np.pad(im, ((0, 28 - im.shape[0]), (0, 28 - im.shape[1])))
            v = im.reshape(7, 4, 7, 4).mean(axis=(1, 3)).ravel() + 1.0
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32).reshape(len(out), self.dim)


def corpus_key(i: int) -> str:
    return f"fashion-mnist/train/{i}" if i < 60000 else f"fashion-mnist/test/{i - 60000}"


def _platform(tmp_path, ids, keys=None):
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, storage_key TEXT NOT NULL, split TEXT)")
    keys = keys or {}
    rows = [(int(i), keys.get(int(i), corpus_key(int(i))), "train" if i < 60000 else "test") for i in ids]
    conn.executemany("INSERT INTO images VALUES (?, ?, ?)", rows)
    conn.commit()
    return conn


def _upload(tmp_path, name, pixels):
    from PIL import Image

    target = tmp_path / "data" / "objects" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target)


def test_sync_index_is_incremental(tmp_path, monkeypatch, fashion_mnist):
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    conn = _platform(tmp_path, list(range(0, 300)) + list(range(60000, 60100)))
    enc = FakeEncoder()
    path = vi.default_index_path(enc.name, "flat")
    assert path == tmp_path / "data" / "index" / "fake-flat"

    first = vi.sync_index(enc, conn, path, progress=False)
    assert first == vi.SyncResult(added=400, removed=0, total=400, path=str(path))
    again = vi.sync_index(enc, conn, path, progress=False)
    assert (again.added, again.removed, again.total) == (0, 0, 400)

    # the stored embedding is the encoder's embedding of the corpus image with that id
    fm = fashion_mnist
    idx = vi.load(path, expected_dim=enc.dim, expected_fingerprint=enc.fingerprint)
    _, top = idx.search(enc.embed(fm.images[[5, 60050]]), 1)
    assert top[:, 0].tolist() == [5, 60050]

    # an upload (object store) and a deletion
    pixels = (np.arange(40 * 30).reshape(40, 30) % 255).astype(np.uint8)
    _upload(tmp_path, "u1.png", pixels)
    conn.execute("INSERT INTO images VALUES (70000, 'u1.png', 'upload')")
    conn.execute("DELETE FROM images WHERE id IN (3, 60001)")
    conn.commit()
    third = vi.sync_index(enc, conn, path, progress=False)
    assert (third.added, third.removed, third.total) == (1, 2, 399)
    idx = vi.load(path)
    assert 70000 in idx and 3 not in idx and 60001 not in idx
    _, top = idx.search(enc.embed([pixels]), 1)
    assert top[0, 0] == 70000

    # a different encoder is refused unless rebuilding
    class Other(FakeEncoder):
        fingerprint = "fake-0002"

    with pytest.raises(IndexMismatchError):
        vi.sync_index(Other(), conn, path, progress=False)
    rebuilt = vi.sync_index(Other(), conn, path, rebuild=True, progress=False)
    assert rebuilt.total == 399 and vi.load(path).fingerprint == "fake-0002"


def test_sync_index_reads_pixels_through_the_storage_key(tmp_path, monkeypatch, fashion_mnist):
    """Which pixels an id has is the row's storage key, whatever the id: a small id may be an
    upload, a large one a corpus image."""

    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    photo = np.random.default_rng(0).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    _upload(tmp_path, "photos/cat.png", photo)
    conn = _platform(tmp_path, [5, 6, 80000], keys={5: "photos/cat.png", 80000: "fashion-mnist/test/7"})
    enc = FakeEncoder()
    res = vi.sync_index(enc, conn, tmp_path / "idx", progress=False)
    assert res.added == 3
    stored = vi.load(tmp_path / "idx").reconstruct([5, 6, 80000])
    fm = fashion_mnist
    np.testing.assert_allclose(stored, enc.embed([photo, fm.train_images[6], fm.test_images[7]]), atol=1e-6)

    # a row whose object file is missing: a clear error, and the saved index is unchanged
    conn.execute("INSERT INTO images VALUES (7, 'photos/gone.png', 'upload')")
    conn.commit()
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        vi.sync_index(enc, conn, tmp_path / "idx", progress=False)
    assert vi.load(tmp_path / "idx").ids().tolist() == [5, 6, 80000]


def test_storage_keys_of_ids(tmp_path):
    from vs_lib import data

    conn = _platform(tmp_path, [4, 9, 2], keys={9: "u/9.png"})
    ids, keys = vi.storage_keys(conn)
    assert ids.tolist() == [2, 4, 9] and keys.tolist() == [corpus_key(2), corpus_key(4), "u/9.png"]
    assert vi.storage_keys(conn, [9, 2])[1].tolist() == ["u/9.png", corpus_key(2)]
    with pytest.raises(data.UnknownImageError, match="3"):
        vi.storage_keys(conn, [2, 3])


def test_sync_index_trains_ivf_on_first_run(tmp_path, monkeypatch, fashion_mnist):
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    conn = _platform(tmp_path, range(600))
    res = vi.sync_index(FakeEncoder(), conn, tmp_path / "ivf", kind="ivf", progress=False, chunk=128)
    assert res.total == 600
    idx = vi.load(tmp_path / "ivf")
    assert idx.kind == "ivf" and idx.is_trained and idx.params["nlist"] == vi.auto_nlist(600)


def test_cli_requires_a_trained_encoder(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("VS_MODELS_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    vi.cli_add_arguments(parser)
    args = parser.parse_args(["--model", "nope", "--kind", "hnsw"])
    assert args.kind == "hnsw"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        vi.cli_main(args)
