"""Data engineering: the Fashion-MNIST corpus, the platform database and the way to pixels.

The corpus
    ``load_fashion_mnist()`` returns the 70,000 real 28×28 grayscale product images from
    Zalando with the published train/test split. Corpus image ids are positions in
    train + test: ids ``0..59999`` are training images, ``60000..69999`` test images.

The platform database (SQLite, ``data/visual_search.db``)
    ``images`` (owner, upload time, tags, private and flagged flags, storage key),
    ``users`` (with personal fields no public interface returns) and ``interactions``
    (impressions and clicks). Images are real; their metadata, all users and the seed
    interaction log are **synthetic** (:mod:`vs_lib.synthetic`), generated with a seed, and
    say so in a ``synthetic`` column and in the ``meta`` table.

Pixels
    Every image row has a *storage key*: ``fashion-mnist/<train|test>/<row>`` for the corpus,
    a path relative to the object store (``data/objects``) for uploads.
    :func:`load_pixels` is the one way from a key to pixels; :func:`insert_image` the one
    way to add an image row.

Folders of your own images are read by :mod:`vs_lib.folders`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from . import config, database, synthetic
from .database import SCHEMA, SCHEMA_VERSION, connect

# The synthetic world's constants, also read as ``data.*`` by the online simulation.
from .synthetic import CITIES, EPOCH_START, YEAR, GeneratorConfig  # noqa: F401

if TYPE_CHECKING:
    import argparse

    import pandas as pd

CLI_HELP = "ensure the Fashion-MNIST corpus and the platform database; print sources and row counts"

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N_TRAIN, N_TEST = 60_000, 10_000

# ---------------------------------------------------------------------------------------
# Dataset registry (d2l's DATA_HUB idea): file -> (download URLs, SHA-256 of its content).
#
# The checksum is of the *decompressed* IDX bytes: Debian's dataset-fashion-mnist package
# recompresses the archives, so the .gz bytes differ from upstream while the data inside
# is identical. Verifying the content works for every source alike.
# ---------------------------------------------------------------------------------------
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DOWNLOAD_MIRRORS = [
    OFFICIAL_URL,
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]
FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
DEBIAN_PACKAGE = "dataset-fashion-mnist"


class DataNotFoundError(FileNotFoundError):
    """No usable copy of the dataset anywhere; the message lists every place tried."""


class UnknownImageError(KeyError):
    """An image id that is not in the platform database."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown image"


@dataclass(frozen=True)
class FashionMNIST:
    """The corpus with its published split. Images are uint8 ``(n, 28, 28)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    source: str = ""

    @cached_property
    def images(self) -> np.ndarray:
        """All 70,000 images, train then test: ``images[i]`` has image id ``i`` (built once)."""
        return _readonly(np.concatenate([self.train_images, self.test_images]))

    @cached_property
    def labels(self) -> np.ndarray:
        return _readonly(np.concatenate([self.train_labels, self.test_labels]))

    @property
    def ids(self) -> np.ndarray:
        return np.arange(len(self.train_images) + len(self.test_images), dtype=np.int64)

    @property
    def train_ids(self) -> np.ndarray:
        return np.arange(len(self.train_images), dtype=np.int64)

    @property
    def test_ids(self) -> np.ndarray:
        return np.arange(len(self.test_images), dtype=np.int64) + len(self.train_images)


def candidate_dirs() -> list[Path]:
    """Folders searched for the four files, in order (the download lands in the second)."""
    dirs: list[Path] = []
    env = os.environ.get("VS_DATA_DIR")
    if env:
        dirs += [Path(env) / "fashion-mnist", Path(env)]
    dirs.append(config.ROOT / "data" / "fashion-mnist")
    dirs += list(SYSTEM_DIRS)
    unique: dict[str, Path] = {}  # by absolute path (no file-system calls: this runs on every pixel load)
    for d in dirs:
        unique.setdefault(os.path.abspath(d), d)
    return list(unique.values())


def _read_idx(raw: bytes, name: str) -> np.ndarray:
    magic = int.from_bytes(raw[:4], "big")
    if magic == 2051:  # images
        n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    if magic == 2049:  # labels
        return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    raise ValueError(f"{name}: not an IDX file (magic number {magic})")


def _load_verified(path: Path, expected_sha256: str) -> np.ndarray:
    """Decompress ``path``, check its content's SHA-256, parse it. Raises ValueError."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: unreadable gzip ({e})") from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise ValueError(f"{path}: checksum mismatch (sha256 {digest[:12]}…, expected {expected_sha256[:12]}…)")
    return _read_idx(raw, path.name)


def _try_dir(folder: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    arrays = {}
    for name, sha in FILES.items():
        p = folder / name
        if not p.exists():
            return None, f"{folder}: {name} missing"
        try:
            arrays[name] = _load_verified(p, sha)
        except ValueError as e:
            return None, str(e)
    return arrays, "ok"


def _download(dest: Path, mirrors: Sequence[str]) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    """Fetch the four files from the first mirror that serves them intact (atomic writes)."""
    problems: list[str] = []
    for base in mirrors:
        try:
            for name, sha in FILES.items():
                target = dest / name
                if target.exists():
                    try:
                        _load_verified(target, sha)
                        continue
                    except ValueError:
                        pass
                with config.atomic_path(target) as tmp:
                    with urllib.request.urlopen(base + name, timeout=30) as r, open(tmp, "wb") as f:
                        shutil.copyfileobj(r, f)
                    _load_verified(tmp, sha)  # refuse to keep a corrupt download
            arrays, why = _try_dir(dest)
            if arrays is not None:
                return arrays, problems
            problems.append(f"{base}: {why}")
        except Exception as e:  # network errors, HTTP errors, checksum errors
            problems.append(f"download from {base}: {type(e).__name__}: {e}")
    return None, problems


@lru_cache(maxsize=2)
def _load_cached(dirs: tuple[Path, ...], mirrors: tuple[str, ...], download_dir: Path) -> FashionMNIST:
    tried = []
    for d in dirs:
        arrays, why = _try_dir(d)
        if arrays is not None:
            return _assemble(arrays, str(d))
        tried.append(why)
    arrays, problems = _download(download_dir, mirrors)
    if arrays is not None:
        return _assemble(arrays, f"downloaded to {download_dir}")
    tried += problems or ["download: no mirror configured"]
    raise DataNotFoundError(
        "Fashion-MNIST was not found. Tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        "Fix it in one of two ways:\n"
        f"  1. on Debian/Ubuntu: sudo apt-get install -y {DEBIAN_PACKAGE}   "
        f"(puts the files in {SYSTEM_DIRS[0]})\n"
        f"  2. download the four files from {OFFICIAL_URL} "
        f"({', '.join(FILES)}) into {config.ROOT / 'data' / 'fashion-mnist'} or $VS_DATA_DIR/fashion-mnist"
    )


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _assemble(arrays: dict[str, np.ndarray], source: str) -> FashionMNIST:
    ro = _readonly
    return FashionMNIST(
        train_images=ro(arrays["train-images-idx3-ubyte.gz"]),
        train_labels=ro(arrays["train-labels-idx1-ubyte.gz"]),
        test_images=ro(arrays["t10k-images-idx3-ubyte.gz"]),
        test_labels=ro(arrays["t10k-labels-idx1-ubyte.gz"]),
        source=source,
    )


def load_fashion_mnist(download: bool = True) -> FashionMNIST:
    """The corpus, from the first place that has intact files.

    Order: ``$VS_DATA_DIR/fashion-mnist``, ``$VS_DATA_DIR``, ``data/fashion-mnist``,
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``), then a
    download into ``data/fashion-mnist`` verified by SHA-256. Raises
    :class:`DataNotFoundError` listing every place tried. Arrays are read-only.
    """
    download_dir = (
        Path(os.environ["VS_DATA_DIR"]) / "fashion-mnist"
        if os.environ.get("VS_DATA_DIR")
        else config.ROOT / "data" / "fashion-mnist"
    )
    mirrors = tuple(DOWNLOAD_MIRRORS) if download else ()
    return _load_cached(tuple(candidate_dirs()), mirrors, download_dir)


# ---------------------------------------------------------------------------------------
# The platform database
# ---------------------------------------------------------------------------------------
# the rows the seeded generator makes; a schema upgrade (database.upgrade) leaves them as they are
GENERATOR_VERSION = "1"
TABLES = ("images", "users", "interactions")


class BuildInfo(TypedDict):
    """What :func:`build_database` reports: where, whether it built now, and the row counts."""

    path: Path
    built: bool
    counts: dict[str, int]


def _generator_key(cfg: GeneratorConfig) -> str:
    """What ``meta.generator`` records: the generator's version and configuration."""
    return f"v{GENERATOR_VERSION}:{cfg.key()}"


def _existing_key(path: Path) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'generator'").fetchone()
            return row[0] if row else None
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def build_database(
    path: str | os.PathLike | None = None,
    cfg: GeneratorConfig | None = None,
    force: bool = False,
    dataset: FashionMNIST | None = None,
) -> BuildInfo:
    """Create the platform database with seeded synthetic metadata, users and log.

    Idempotent: when ``path`` already holds a database made by the same generator
    configuration it is upgraded to the current schema (:func:`vs_lib.database.upgrade`:
    every row, uploads included, keeps its id) and otherwise left as it is. Otherwise the
    whole database is built in a temporary file and renamed into place, so an interrupted
    build never leaves a half-built database. Returns ``{"path", "built", "counts"}``.
    """
    path = Path(path) if path is not None else config.db_path()
    cfg = cfg or GeneratorConfig()
    if not force and path.exists() and _existing_key(path) == _generator_key(cfg):
        database.upgrade(path)
        return BuildInfo(path=path, built=False, counts=table_counts(path))
    ds = dataset or load_fashion_mnist()
    rows = synthetic.generate(cfg, ds.labels, n_train=len(ds.train_images))
    with config.atomic_path(path) as tmp:
        tmp.unlink()  # sqlite creates its own file
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(SCHEMA)
            with conn:
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("generator", _generator_key(cfg)),
                        ("schema_version", SCHEMA_VERSION),
                        (
                            "synthetic",
                            "users, image metadata and the seed interaction log are synthetic "
                            f"(seed {cfg.seed}); image pixels are real Fashion-MNIST",
                        ),
                        ("dataset_source", ds.source),
                    ],
                )
                conn.executemany("INSERT INTO users VALUES (?,?,?,?,?,?,?,?)", rows["users"])
                conn.executemany("INSERT INTO images VALUES (?,?,?,?,?,?,?,?,?)", rows["images"])
                conn.executemany("INSERT INTO interactions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows["interactions"])
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        # an interrupted build leaves only the temporary file, which atomic_path removes
    for suffix in ("-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    return BuildInfo(path=path, built=True, counts=table_counts(path))


def table_counts(path: str | os.PathLike | None = None) -> dict[str, int]:
    conn = connect(path, readonly=True)
    try:
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        counts["clicks"] = conn.execute("SELECT COUNT(*) FROM interactions WHERE type = 'click'").fetchone()[0]
        return counts
    finally:
        conn.close()


# Columns no public interface may return.
PERSONAL_COLUMNS = frozenset({"email"})


def read_table(
    name: str, conn: sqlite3.Connection | None = None, include_personal: bool = False, limit: int | None = None
) -> pd.DataFrame:
    """A table as a pandas DataFrame. Personal columns (email) are dropped unless asked for."""
    import pandas as pd

    if name not in (*TABLES, "meta"):
        raise ValueError(f"unknown table {name!r}; expected one of {(*TABLES, 'meta')}")
    own = conn is None
    conn = conn or connect(readonly=True)
    try:
        sql = f"SELECT * FROM {name}" + (f" LIMIT {int(limit)}" if limit else "")
        df = pd.read_sql_query(sql, conn)
    finally:
        if own:
            conn.close()
    if not include_personal:
        df = df.drop(columns=[c for c in df.columns if c in PERSONAL_COLUMNS])
    return df


def image_row(conn: sqlite3.Connection, image_id: int) -> dict[str, Any]:
    """The metadata row of one image as a dict; :class:`UnknownImageError` if absent."""
    cur = conn.execute("SELECT * FROM images WHERE id = ?", (int(image_id),))
    row = cur.fetchone()
    if row is None:
        raise UnknownImageError(f"unknown image id {image_id}")
    return dict(zip([d[0] for d in cur.description], row, strict=False))


def objects_dir() -> Path:
    """The local object store for uploaded images (``data/objects``)."""
    return config.data_dir() / "objects"


CORPUS_PREFIX = "fashion-mnist/"  # storage keys of the corpus: fashion-mnist/<train|test>/<row>
UPLOAD_PREFIX = "uploads/"  # storage keys of uploads: uploads/<name>, relative to the object store


def is_corpus_key(storage_key: str) -> bool:
    """True for a Fashion-MNIST corpus image's storage key (pixels in the dataset arrays)."""
    return str(storage_key).startswith(CORPUS_PREFIX)


def object_path(storage_key: str, store_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file of a non-corpus storage key in the object store ``store_dir`` (default :func:`objects_dir`).

    Keys are relative paths without ``..``: a key can never name a file outside the store.
    """
    key = Path(str(storage_key))
    if key.is_absolute() or ".." in key.parts or not key.parts:
        raise UnknownImageError(f"storage key {storage_key!r} is not a path inside the object store")
    return (Path(store_dir) if store_dir is not None else objects_dir()) / key


def _corpus_pixels(key: str, ds: FashionMNIST) -> np.ndarray:
    parts = key.split("/")
    if len(parts) != 3 or parts[1] not in ("train", "test") or not parts[2].isdigit():
        raise UnknownImageError(f"malformed corpus storage key {key!r}: expected fashion-mnist/<train|test>/<row>")
    arr = ds.train_images if parts[1] == "train" else ds.test_images
    if int(parts[2]) >= len(arr):
        raise UnknownImageError(f"corpus storage key {key!r} is past the {len(arr)} {parts[1]} images")
    return arr[int(parts[2])]


def load_pixels(storage_key: str, *, store_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """The pixels an image's storage key names: uint8 ``(H, W)`` or ``(H, W, 3)``.

    This is the library's one way from a storage key to pixels. ``fashion-mnist/<split>/<row>``
    reads the dataset arrays (read-only); any other key is a file in the object store
    ``store_dir`` (default :func:`objects_dir`), decoded to ``L`` or ``RGB``. Raises
    :class:`UnknownImageError` for a malformed key and ``FileNotFoundError`` when the object
    file is missing.
    """
    return load_pixels_many([storage_key], store_dir=store_dir)[0]


def load_pixels_many(
    storage_keys: Sequence[str], *, store_dir: str | os.PathLike[str] | None = None
) -> list[np.ndarray]:
    """:func:`load_pixels` of every key, in order (the corpus is looked up once for all of them)."""
    from PIL import Image

    keys = [str(k) for k in storage_keys]
    ds = load_fashion_mnist() if any(is_corpus_key(k) for k in keys) else None
    out = []
    for key in keys:
        if ds is not None and is_corpus_key(key):
            out.append(_corpus_pixels(key, ds))
            continue
        with Image.open(object_path(key, store_dir)) as im:
            out.append(np.asarray(im.convert("L") if im.mode not in ("L", "RGB") else im).copy())
    return out


def load_image(
    conn: sqlite3.Connection, image_id: int, *, store_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Pixels of one image by id (its row's storage key through :func:`load_pixels`)."""
    return load_pixels(image_row(conn, image_id)["storage_key"], store_dir=store_dir)


def insert_image(
    conn: sqlite3.Connection,
    *,
    owner_id: int,
    storage_key: str,
    tags: str = "",
    is_private: bool = False,
    upload_time: int | None = None,
) -> int:
    """Add an uploaded image's row and return the id SQLite assigned; the caller commits.

    Uploads are real user data: ``split = 'upload'``, ``synthetic = 0``, never flagged at
    upload time. The schema's constraints (known owner, unique storage key) raise
    ``sqlite3.IntegrityError``.
    """
    cur = conn.execute(
        "INSERT INTO images (owner_id, upload_time, tags, is_private, is_flagged, storage_key, split, synthetic)"
        " VALUES (?, ?, ?, ?, 0, ?, 'upload', 0)",
        (
            int(owner_id),
            int(time.time() if upload_time is None else upload_time),
            tags,
            int(bool(is_private)),
            storage_key,
        ),
    )
    assert cur.lastrowid is not None  # an INSERT always sets it
    return int(cur.lastrowid)


def delete_image(conn: sqlite3.Connection, image_id: int, *, store_dir: str | os.PathLike[str] | None = None) -> str:
    """Remove an image from the platform: its row, its stored vectors and interactions (one
    transaction), then its object file (an upload's; corpus pixels stay). Returns its storage key.

    A kill between the two leaves a file no row names, which the service removes at its next
    start-up. The vector index drops the id at its next sync (a running service at once,
    when the deletion goes through it).
    """
    key = str(image_row(conn, image_id)["storage_key"])
    with conn:
        conn.execute("DELETE FROM images WHERE id = ?", (int(image_id),))
    if not is_corpus_key(key):
        object_path(key, store_dir).unlink(missing_ok=True)
    return key


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help="database path (default: data/visual_search.db)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the database even if up to date")


def cli_main(args: argparse.Namespace) -> int:
    try:
        ds = load_fashion_mnist()
    except DataNotFoundError as e:
        print(e)
        return 1
    print(f"Fashion-MNIST: {len(ds.train_images):,} train + {len(ds.test_images):,} test images from {ds.source}")
    info = build_database(args.db, GeneratorConfig(seed=args.seed), force=args.rebuild, dataset=ds)
    state = "built" if info["built"] else "up to date, reused"
    print(f"Platform database: {info['path']} ({state})")
    c = info["counts"]
    print(f"  images:       {c['images']:>9,}  (real pixels, synthetic metadata)")
    print(f"  users:        {c['users']:>9,}  (synthetic)")
    print(f"  interactions: {c['interactions']:>9,}  (synthetic; {c['clicks']:,} clicks)")
    return 0
