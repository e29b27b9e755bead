"""A folder of the user's own images: every JPEG and PNG under it, read without ever crashing.

``load_image_folder(folder)`` walks the folder recursively in path order, decodes each
image fully (so a truncated file is caught here, not later in a model) and skips what it
cannot read, listing every skipped file in one warning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


@dataclass
class ImageFolder:
    """Images found under a folder: PIL images (mode as stored), their paths, and what was skipped."""

    images: list[Image.Image]
    paths: list[Path]
    skipped: list[tuple[Path, str]]  # (path, why it could not be read)

    def __len__(self) -> int:
        return len(self.images)


def load_image_folder(folder: str | os.PathLike[str]) -> ImageFolder:
    """Every JPEG/PNG under ``folder`` (recursive, sorted by path; suffixes in any case).

    Unreadable or corrupt files are skipped and listed in one ``UserWarning``; a path that
    is not a folder raises ``NotADirectoryError``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of images")
    images: list[Image.Image] = []
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
            paths.append(p)
        except Exception as e:  # Pillow raises many kinds for bad files
            skipped.append((p, f"{type(e).__name__}: {e}"))
    if skipped:
        listing = "\n  ".join(f"{p}: {why}" for p, why in skipped)
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s):\n  {listing}", stacklevel=2)
    return ImageFolder(images, paths, skipped)
