"""vs_lib.data: the corpus loader, the folder loader and the platform database."""

from __future__ import annotations

import argparse
import gzip
import importlib
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from vs_lib import config, data, database, folders, synthetic


@pytest.fixture(scope="module")
def ds():
    return data.load_fashion_mnist()


def _isolate(monkeypatch, tmp_path, mirrors=()):
    """Point every place the loader looks at empty folders."""
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "vsdata"))
    monkeypatch.setattr(config, "ROOT", tmp_path / "repo")
    monkeypatch.setattr(data, "SYSTEM_DIRS", [tmp_path / "system"])
    monkeypatch.setattr(data, "DOWNLOAD_MIRRORS", list(mirrors))
    data._load_cached.cache_clear()


def test_corpus_shapes_and_split(ds):
    assert ds.train_images.shape == (60000, 28, 28) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (10000, 28, 28)
    assert ds.train_labels.dtype == np.int64
    # the published split is balanced: 6,000 / 1,000 per class
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert len(ds.class_names) == 10 and ds.class_names[9] == "Ankle boot"
    assert ds.images.shape == (70000, 28, 28) and (ds.ids == np.arange(70000)).all()
    np.testing.assert_array_equal(ds.images[60000], ds.test_images[0])
    assert not ds.train_images.flags.writeable


def test_no_data_anywhere_lists_every_place_and_both_fixes(monkeypatch, tmp_path):
    (tmp_path / "mirror").mkdir()
    _isolate(monkeypatch, tmp_path, mirrors=[(tmp_path / "mirror").as_uri() + "/"])
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_fashion_mnist()
    msg = str(err.value)
    for place in [
        tmp_path / "vsdata" / "fashion-mnist",
        tmp_path / "repo" / "data" / "fashion-mnist",
        tmp_path / "system",
        "mirror",
    ]:
        assert str(place) in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert data.OFFICIAL_URL in msg.split("2.")[-1]  # the download URL is the second fix
    data._load_cached.cache_clear()


@pytest.fixture
def mirror(tmp_path):
    m = tmp_path / "mirror"
    m.mkdir()
    for name in data.FILES:
        shutil.copy(data.SYSTEM_DIRS[0] / name, m / name)
    return m


def test_download_from_mirror_is_verified_and_kept(monkeypatch, tmp_path, mirror):
    _isolate(monkeypatch, tmp_path, mirrors=[mirror.as_uri() + "/"])
    ds = data.load_fashion_mnist()
    assert "downloaded" in ds.source and ds.train_images.shape == (60000, 28, 28)
    assert sorted(p.name for p in (tmp_path / "vsdata" / "fashion-mnist").iterdir()) == sorted(data.FILES)
    data._load_cached.cache_clear()
    # a second load finds the downloaded copy first and fetches nothing
    monkeypatch.setattr(data, "DOWNLOAD_MIRRORS", [])
    assert data.load_fashion_mnist().source == str(tmp_path / "vsdata" / "fashion-mnist")
    data._load_cached.cache_clear()


def test_corrupt_download_is_refused_and_not_kept(monkeypatch, tmp_path, mirror):
    raw = gzip.decompress((mirror / "t10k-labels-idx1-ubyte.gz").read_bytes())
    tampered = raw[:-1] + bytes([(raw[-1] + 1) % 10])  # one label changed, still valid gzip
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(tampered))
    _isolate(monkeypatch, tmp_path, mirrors=[mirror.as_uri() + "/"])
    with pytest.raises(data.DataNotFoundError, match="checksum mismatch"):
        data.load_fashion_mnist()
    assert not (tmp_path / "vsdata" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    data._load_cached.cache_clear()


def test_corrupt_local_copy_is_skipped_for_the_next_place(monkeypatch, tmp_path, mirror):
    _isolate(monkeypatch, tmp_path)
    local = tmp_path / "vsdata" / "fashion-mnist"
    local.mkdir(parents=True)
    for name in data.FILES:
        (local / name).write_bytes(b"not a gzip file")
    monkeypatch.setattr(data, "SYSTEM_DIRS", [mirror])
    assert data.load_fashion_mnist().source == str(mirror)
    data._load_cached.cache_clear()


def test_image_folder_skips_corrupt_files_with_a_warning(tmp_path):
    from PIL import Image

    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.jpg")
    Image.new("L", (28, 28), 128).save(tmp_path / "sub" / "b.PNG")
    Image.new("RGBA", (10, 10)).save(tmp_path / "sub" / "deeper" / "c.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as w:
        folder = folders.load_image_folder(tmp_path)
    assert "broken.png" in str(w[0].message) and "empty.jpg" in str(w[0].message)
    assert [p.name for p in folder.paths] == ["a.jpg", "b.PNG", "c.png"]
    assert sorted(im.size for im in folder.images) == [(10, 10), (28, 28), (40, 30)]
    with pytest.raises(NotADirectoryError):
        folders.load_image_folder(tmp_path / "a.jpg")


# ------------------------------------------------------------------- platform database
SMALL = synthetic.GeneratorConfig(seed=3, n_users=40, n_sessions=150)


@pytest.fixture(scope="module")
def small_ds():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    imgs = rng.integers(0, 255, (300, 28, 28), dtype=np.uint8)
    return data.FashionMNIST(imgs, labels, imgs[:0], labels[:0], source="test")


@pytest.fixture
def small_db(tmp_path, small_ds):
    path = tmp_path / "platform.db"
    data.build_database(path, SMALL, dataset=small_ds)
    return path


def _dump(path):
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in data.TABLES}
    finally:
        conn.close()


def test_generator_is_deterministic(tmp_path, small_ds, small_db):
    other = tmp_path / "again.db"
    data.build_database(other, SMALL, dataset=small_ds)
    assert _dump(small_db) == _dump(other)
    third = tmp_path / "seed4.db"
    data.build_database(third, synthetic.GeneratorConfig(seed=4, n_users=40, n_sessions=150), dataset=small_ds)
    assert _dump(third)["interactions"] != _dump(small_db)["interactions"]


def test_building_twice_never_duplicates_rows(small_db, small_ds):
    before = data.table_counts(small_db)
    info = data.build_database(small_db, SMALL, dataset=small_ds)
    assert info["built"] is False and data.table_counts(small_db) == before
    info = data.build_database(small_db, SMALL, dataset=small_ds, force=True)
    assert info["built"] is True and data.table_counts(small_db) == before


def test_interrupted_build_keeps_the_previous_database(small_db, small_ds, monkeypatch):
    before = _dump(small_db)
    real = synthetic.generate

    def broken(cfg, labels, n_train):
        rows = real(cfg, labels, n_train)
        bad = list(rows["interactions"][-1])
        bad[0], bad[5] = bad[0] + 1, "view"  # violates the CHECK on type, after most rows are in
        rows["interactions"].append(tuple(bad))
        return rows

    monkeypatch.setattr(synthetic, "generate", broken)
    with pytest.raises(sqlite3.IntegrityError):
        data.build_database(small_db, SMALL, dataset=small_ds, force=True)
    assert _dump(small_db) == before
    assert [p.name for p in small_db.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "sql, params",
    [
        (
            "INSERT INTO interactions (user_id, query_image_id, displayed_image_id, position, type, timestamp) "
            "VALUES (1, 0, 1, 1, 'view', 0)",
            (),
        ),
        (
            "INSERT INTO interactions (user_id, query_image_id, displayed_image_id, position, type, timestamp) "
            "VALUES (1, 0, 1, 0, 'click', 0)",
            (),
        ),
        (
            "INSERT INTO interactions (user_id, query_image_id, displayed_image_id, position, type, timestamp) "
            "VALUES (99999, 0, 1, 1, 'click', 0)",
            (),
        ),  # unknown user
        (
            "INSERT INTO interactions (user_id, query_image_id, displayed_image_id, position, type, timestamp) "
            "VALUES (1, 0, 987654, 1, 'click', 0)",
            (),
        ),  # unknown image
        (
            "INSERT INTO interactions (user_id, query_image_id, displayed_image_id, position, type, timestamp, lat) "
            "VALUES (1, 0, 1, 1, 'click', 0, 123.0)",
            (),
        ),  # latitude out of range
        (
            "INSERT INTO interactions (user_id, query_image_id, displayed_image_id, position, type, timestamp, "
            "dwell_seconds) VALUES (1, 0, 1, 1, 'impression', 0, 5.0)",
            (),
        ),  # dwell only on clicks
        (
            "INSERT INTO images (owner_id, upload_time, storage_key, split, is_private) VALUES (1, 0, 'k', 'upload', 2)",
            (),
        ),
        (
            "INSERT INTO images (owner_id, upload_time, storage_key, split) VALUES (1, 0, 'fashion-mnist/train/0', 'upload')",
            (),
        ),  # duplicate storage key
        ("INSERT INTO images (owner_id, upload_time, storage_key, split) VALUES (1, -5, 'k2', 'upload')", ()),
        ("INSERT INTO users (username, age, email) VALUES ('x', 30, 'no-at-sign')", ()),
        ("INSERT INTO users (username, age, email) VALUES ('y', 5, 'y@example.com')", ()),
        ("INSERT INTO users (username, email) VALUES ('user00001', 'z@example.com')", ()),  # duplicate username
    ],
)
def test_constraints_reject_bad_rows(small_db, sql, params):
    conn = data.connect(small_db)
    before = data.table_counts(small_db)
    with pytest.raises(sqlite3.IntegrityError), conn:
        conn.execute(sql, params)
    conn.close()
    assert data.table_counts(small_db) == before


def test_generated_proportions_and_synthetic_marks(tmp_path, ds):
    path = tmp_path / "full.db"
    data.build_database(path, synthetic.GeneratorConfig(n_sessions=500), dataset=ds)
    conn = data.connect(path)
    n, private, flagged = conn.execute("SELECT COUNT(*), AVG(is_private), AVG(is_flagged) FROM images").fetchone()
    assert n == 70000 and 0.015 < private < 0.025 and 0.006 < flagged < 0.014
    assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 3000
    assert conn.execute("SELECT MIN(synthetic) FROM users").fetchone()[0] == 1
    assert conn.execute("SELECT MIN(synthetic) FROM interactions").fetchone()[0] == 1
    assert "synthetic" in conn.execute("SELECT value FROM meta WHERE key='synthetic'").fetchone()[0]
    # tags come from the class; the test split keeps its own keys
    row = data.image_row(conn, 60000)
    assert row["split"] == "test" and row["storage_key"] == "fashion-mnist/test/0"
    assert synthetic.CLASS_TAGS[ds.test_labels[0]][0] in row["tags"]
    np.testing.assert_array_equal(data.load_image(conn, 60000), ds.test_images[0])
    # every click was preceded by an impression of the same item in the same session
    orphan = conn.execute("""SELECT COUNT(*) FROM interactions c WHERE c.type='click' AND NOT EXISTS (
        SELECT 1 FROM interactions i WHERE i.type='impression' AND i.session_id=c.session_id
        AND i.displayed_image_id=c.displayed_image_id)""").fetchone()[0]
    assert orphan == 0
    # no private or flagged image was shown by the legacy system
    shown_hidden = conn.execute("""SELECT COUNT(*) FROM interactions x JOIN images i ON i.id = x.displayed_image_id
        WHERE i.is_private = 1 OR i.is_flagged = 1""").fetchone()[0]
    assert shown_hidden == 0
    with pytest.raises(data.UnknownImageError, match="unknown image id 123456"):
        data.load_image(conn, 123456)
    conn.close()


def test_read_table_never_returns_email_unless_asked(small_db):
    conn = data.connect(small_db)
    users = data.read_table("users", conn)
    assert "email" not in users.columns and len(users) == SMALL.n_users
    assert "email" in data.read_table("users", conn, include_personal=True).columns
    with pytest.raises(ValueError, match="unknown table"):
        data.read_table("users; DROP TABLE users", conn)
    conn.close()


def test_connect_refuses_a_missing_database(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m vs_lib data"):
        data.connect(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


def test_delete_image_cascades_to_interactions(small_db):
    conn = data.connect(small_db)
    q = conn.execute("SELECT query_image_id FROM interactions LIMIT 1").fetchone()[0]
    data.delete_image(conn, q)
    assert conn.execute("SELECT COUNT(*) FROM interactions WHERE query_image_id=?", (q,)).fetchone()[0] == 0
    with pytest.raises(data.UnknownImageError):
        data.delete_image(conn, q)
    conn.close()


def test_cli_data_prints_sources_and_counts(tmp_path):
    db = tmp_path / "cli.db"
    out = subprocess.run(
        [sys.executable, "-m", "vs_lib", "data", "--db", str(db)], capture_output=True, text=True, check=True
    ).stdout
    assert "Fashion-MNIST: 60,000 train + 10,000 test" in out and "built" in out
    assert "70,000" in out and "3,000" in out and "synthetic" in out
    again = subprocess.run(
        [sys.executable, "-m", "vs_lib", "data", "--db", str(db)], capture_output=True, text=True, check=True
    ).stdout
    assert "up to date, reused" in again


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "vs_lib", "--help"], capture_output=True, text=True, check=True).stdout
    assert "data" in out and "report" in out


def test_every_command_builds_from_its_module_with_the_overview_line():
    """``--help`` lists commands without importing them: each module must still build its command."""
    from vs_lib import __main__ as cli

    for name, (module_name, help_text) in cli.COMMANDS.items():
        sub = next(a for a in cli.build_parser(only=name)._actions if isinstance(a, argparse._SubParsersAction))
        assert callable(sub.choices[name].get_default("_main")), name
        assert help_text == importlib.import_module(module_name).CLI_HELP, name


def test_storage_keys_name_the_pixels(ds, tmp_path, monkeypatch):
    np.testing.assert_array_equal(data.load_pixels("fashion-mnist/train/7"), ds.train_images[7])
    np.testing.assert_array_equal(data.load_pixels("fashion-mnist/test/3"), ds.test_images[3])
    for bad in ("fashion-mnist/train/60000", "fashion-mnist/valid/1", "fashion-mnist/train/x"):
        with pytest.raises(data.UnknownImageError):
            data.load_pixels(bad)
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path))
    from PIL import Image

    (tmp_path / "objects" / "uploads").mkdir(parents=True)
    rgba = np.zeros((5, 4, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "objects" / "uploads" / "a.png")
    got = data.load_pixels("uploads/a.png")
    assert got.shape == (5, 4) and got.dtype == np.uint8  # RGBA is read as L
    with pytest.raises(FileNotFoundError):
        data.load_pixels("uploads/missing.png")


def test_load_pixels_many_reads_corpus_and_a_given_object_store(ds, tmp_path):
    from PIL import Image

    store = tmp_path / "store"
    (store / "uploads").mkdir(parents=True)
    rgb = np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(store / "uploads" / "c.png")
    keys = ["fashion-mnist/test/9", "uploads/c.png", "fashion-mnist/train/0"]
    got = data.load_pixels_many(keys, store_dir=store)
    np.testing.assert_array_equal(got[0], ds.test_images[9])
    np.testing.assert_array_equal(got[1], rgb)  # RGB is kept, lossless PNG
    np.testing.assert_array_equal(got[2], ds.train_images[0])
    np.testing.assert_array_equal(data.load_pixels("uploads/c.png", store_dir=store), rgb)
    for outside in ("../secret.png", "/etc/passwd", "uploads/../../x.png"):
        with pytest.raises(data.UnknownImageError, match="inside the object store"):
            data.load_pixels(outside, store_dir=store)


def test_insert_image_adds_an_upload_row_and_respects_the_constraints(small_db):
    conn = data.connect(small_db)
    before = data.table_counts(small_db)["images"]
    new = data.insert_image(
        conn, owner_id=3, storage_key="uploads/n.png", tags="a,b", is_private=True, upload_time=1_700_000_000
    )
    conn.commit()
    row = data.image_row(conn, new)
    assert new == before  # SQLite assigns max(id) + 1: after the generated ids 0..n-1
    assert {
        k: row[k] for k in ("owner_id", "tags", "is_private", "is_flagged", "split", "synthetic", "upload_time")
    } == {
        "owner_id": 3,
        "tags": "a,b",
        "is_private": 1,
        "is_flagged": 0,
        "split": "upload",
        "synthetic": 0,
        "upload_time": 1_700_000_000,
    }
    for owner, key in ((99_999, "uploads/m.png"), (3, "uploads/n.png")):  # unknown owner; storage key taken
        with pytest.raises(sqlite3.IntegrityError):
            data.insert_image(conn, owner_id=owner, storage_key=key)
        conn.rollback()
    assert data.table_counts(small_db)["images"] == before + 1
    conn.close()


# ------------------------------------------------------------------- schema upgrades and stable ids
V1_IMAGES = """CREATE TABLE images (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL REFERENCES users(id), upload_time INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '', is_private INTEGER NOT NULL DEFAULT 0, is_flagged INTEGER NOT NULL DEFAULT 0,
    storage_key TEXT NOT NULL UNIQUE, split TEXT NOT NULL, synthetic INTEGER NOT NULL DEFAULT 0)"""


def _as_version_1(path):
    """Turn a fresh database into what version 1 wrote: images without AUTOINCREMENT, no
    vectors/credentials/passwords tables, schema_version 1 (rebuilt by hand, in plain SQL)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA legacy_alter_table = ON")  # keep interactions pointing at "images"
    conn.executescript(
        "DROP TABLE vectors; DROP TABLE credentials; DROP TABLE passwords;"
        f"ALTER TABLE images RENAME TO images_old; {V1_IMAGES};"
        "INSERT INTO images SELECT * FROM images_old; DROP TABLE images_old;"
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.commit()
    conn.close()


def test_upgrade_keeps_every_row_and_id_and_makes_ids_never_reused(small_db):
    _as_version_1(small_db)
    conn = sqlite3.connect(small_db)
    conn.execute(
        "INSERT INTO images (id, owner_id, upload_time, storage_key, split) VALUES (5000, 3, 0, 'uploads/a.png', 'upload')"
    )
    conn.commit()
    conn.execute("DELETE FROM images WHERE id = 5000")  # version 1 would give 5000 to the next insert
    conn.commit()
    conn.close()
    before = _dump(small_db)
    # the data command upgrades an existing database instead of rebuilding it
    info = data.build_database(small_db, SMALL, dataset=None)
    assert info["built"] is False
    assert _dump(small_db) == before  # every image, user and interaction kept, with its id
    conn = data.connect(small_db)
    try:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'images'").fetchone()[0]
        assert "AUTOINCREMENT" in sql.upper()
        assert {"vectors", "credentials", "passwords"} <= {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            database.SCHEMA_VERSION,
        )
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        a = data.insert_image(conn, owner_id=1, storage_key="uploads/b.png")
        conn.commit()
        data.delete_image(conn, a)
        b = data.insert_image(conn, owner_id=1, storage_key="uploads/c.png")
        conn.commit()
        assert b > a > max(i for (i, *_) in before["images"])  # no id is given twice
    finally:
        conn.close()
    assert database.upgrade(small_db) == []  # idempotent


def test_delete_image_removes_row_vector_and_object_file(small_db, tmp_path):
    from PIL import Image

    store = tmp_path / "objects"
    conn = data.connect(small_db)
    try:
        key = "uploads/x.png"
        (store / "uploads").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(store / key)
        i = data.insert_image(conn, owner_id=2, storage_key=key)
        database.write_vector(conn, i, "enc-1", np.ones(8, np.float32))
        conn.commit()
        ids, vecs = database.read_vectors(conn, "enc-1", [i])
        assert ids.tolist() == [i] and vecs.tolist() == [[1.0] * 8]
        assert data.delete_image(conn, i, store_dir=store) == key
        assert not (store / key).exists()
        assert database.read_vectors(conn, "enc-1")[0].size == 0
        corpus = conn.execute("SELECT id FROM images WHERE storage_key LIKE 'fashion-mnist/%' LIMIT 1").fetchone()[0]
        data.delete_image(conn, corpus, store_dir=store)  # a corpus image: its row goes, the dataset is read-only
        assert conn.execute("SELECT COUNT(*) FROM images WHERE id = ?", (corpus,)).fetchone() == (0,)
    finally:
        conn.close()
