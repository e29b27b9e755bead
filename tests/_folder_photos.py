"""A small folder of real and generated photos for the folder-mode tests (API and browser).

scikit-image's sample photos (bundled with the package: nothing is downloaded), a few
pictures made with PIL, a near-duplicate, a large JPEG, a file that is not an image and a
symlink that points out of the folder (the scan follows it, so it is indexed; a server must
still never serve it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

FACE = (110, 60, 360, 290)  # the cat's face in chelsea.jpg (451 x 300), x0, y0, x1, y1 in pixels
LARGE_SIZE = (2400, 1600)  # large.jpg: larger than the page's 1024-pixel view
IMAGES = [  # what the folder's collection must hold, sorted
    "camera.png",
    "chelsea.jpg",
    "coffee.jpg",
    "copies/coffee_small.png",
    "gen/blobs_1.png",
    "gen/blobs_2.png",
    "gen/stripes.bmp",
    "large.jpg",
    "outside.png",
    "people/astronaut.png",
    "space/rocket.webp",
]


def blobs(seed: int, size: tuple[int, int]) -> Image.Image:
    """Smooth colour blobs, one picture per seed."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)


def make_folder(root: Path) -> tuple[Path, Path]:
    """Write the folder under ``root``; returns ``(folder, secret)``, ``secret`` a picture outside it."""
    folder = root / "photos"
    for sub in ("people", "space", "gen", "copies"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(skdata.chelsea()).save(folder / "chelsea.jpg", quality=92)
    coffee = Image.fromarray(skdata.coffee())
    coffee.save(folder / "coffee.jpg", quality=92)
    coffee.resize((300, 200), Image.Resampling.LANCZOS).save(folder / "copies" / "coffee_small.png")
    Image.fromarray(skdata.astronaut()).save(folder / "people" / "astronaut.png")
    Image.fromarray(skdata.camera()).save(folder / "camera.png")
    Image.fromarray(skdata.rocket()).save(folder / "space" / "rocket.webp", quality=90)
    blobs(1, (320, 240)).save(folder / "gen" / "blobs_1.png")
    blobs(2, (240, 320)).save(folder / "gen" / "blobs_2.png")
    stripes = np.zeros((200, 300, 3), np.uint8)
    stripes[:, ::20] = (30, 90, 200)
    stripes[::25] = (220, 40, 40)
    Image.fromarray(stripes).save(folder / "gen" / "stripes.bmp")
    blobs(3, LARGE_SIZE).save(folder / "large.jpg", quality=85)
    (folder / "notes.txt").write_text("not an image")
    secret_dir = root / "secret"
    secret_dir.mkdir(exist_ok=True)
    secret = secret_dir / "secret.png"
    blobs(4, (200, 200)).save(secret)
    os.symlink(secret, folder / "outside.png")
    return folder, secret


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (links not followed) → (size, mtime_ns): to prove nothing was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def indexed_folder(root: Path) -> Iterator[tuple[Path, Path, object]]:
    """``(folder, secret, collection)``: :func:`make_folder` under ``root``, indexed with the photo
    encoder into ``root/data`` (set as the data and models folders for the block), loaded once."""
    from vs_lib import collection, models, photo

    folder, secret = make_folder(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VS_DATA_DIR", str(root / "data"))
        mp.setenv("VS_MODELS_DIR", str(root / "data" / "models"))
        with models.torch_threads(models.auto_threads()):
            photo.ensure_photo_encoder()
            collection.index_folder(folder, progress=False)
            coll = collection.Collection.open(folder=folder)
            coll.index  # noqa: B018 - the encoder and the index, loaded before the first request
        yield folder, secret, coll
