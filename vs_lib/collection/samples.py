"""A small folder of real photos from scikit-image's sample data (shipped with the package, offline).

For crop queries (a cat's face cut out of ``chelsea``) and as the fallback corpus when
Debian's tuxpaint stamps are not installed.  :func:`sample_folder` writes the images as PNG
files into ``<dest>/<category>/<name>.png`` (``max_side`` shrinks them, for quick runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SAMPLE_PHOTOS", "STAMPS_DIR", "sample_folder", "sample_photo"]

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")  # Debian's tuxpaint-stamps-default

#: scikit-image sample images by a category of what they show
SAMPLE_PHOTOS: dict[str, tuple[str, ...]] = {
    "animals": ("chelsea", "cat", "horse"),
    "objects": ("coffee", "rocket", "clock", "coins", "stereo_motorcycle"),
    "people": ("astronaut", "camera"),
    "science": ("hubble_deep_field", "immunohistochemistry", "retina", "cell", "moon"),
    "textures": ("brick", "grass", "gravel"),
    "text": ("page", "text"),
}


def sample_photo(name: str) -> Image.Image:
    """One scikit-image sample as an RGB PIL image (``stereo_motorcycle``: its left view)."""
    from skimage import data as skdata

    a = getattr(skdata, name)()
    if isinstance(a, tuple):
        a = a[0]
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = np.clip(np.asarray(a, np.float64) * (255.0 if a.max() <= 1 else 1.0), 0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    return im.convert("RGB")


def sample_folder(
    dest: str | os.PathLike[str], max_side: int | None = None, names: dict[str, tuple[str, ...]] | None = None
) -> Path:
    """Write the sample photos into ``dest/<category>/<name>.png`` (existing files are kept as they are)."""
    root = Path(dest)
    for category, photos in (names or SAMPLE_PHOTOS).items():
        (root / category).mkdir(parents=True, exist_ok=True)
        for name in photos:
            path = root / category / f"{name}.png"
            if path.exists():
                continue
            im = sample_photo(name)
            if max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            tmp = path.with_name(f".{path.name}.tmp")
            im.save(tmp, format="PNG")
            os.replace(tmp, path)
    return root
