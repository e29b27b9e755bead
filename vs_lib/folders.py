"""A folder of the user's own images: found, read and decoded without ever crashing.

Two ways in:

- ``load_image_folder(folder)`` walks the folder recursively in path order, decodes each
  JPEG and PNG fully (so a truncated file is caught here, not later in a model) and skips
  what it cannot read, listing every skipped file in one warning;
- for collections (:mod:`vs_lib.collection`), which must never decode a file twice:
  :func:`scan_folder` lists the image files with their size and modification time only
  (no file is opened, symlink loops are cut, hidden files and non-image files are listed
  apart), and :func:`decode_image_bytes` turns one file's bytes into an RGB image with the
  checks untrusted files need — a decompression-bomb guard read from the header before
  any pixel is decoded, truncation, EXIF orientation, transparency composited on white,
  the first frame of an animation, and reduced-size JPEG decoding (``draft``) when the
  model reads far fewer pixels than the file holds.

Paths inside a folder are relative POSIX strings (``"animals/birds/owl.png"``).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: what a collection indexes: JPEG, PNG, WebP, BMP, GIF (first frame), TIFF
FOLDER_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_PIXELS = 40_000_000  # decompression-bomb guard: larger images are refused before decoding
FORMATS = "JPEG, PNG, WebP, BMP, GIF or TIFF"


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


# --------------------------------------------------------------------------- scanning
class ImageFileError(ValueError):
    """A file that cannot be used as an image (not an image, corrupt, truncated, too large)."""


@dataclass(frozen=True)
class FileStat:
    """One image file found by :func:`scan_folder`: ``path`` relative to the folder (POSIX),
    ``size`` in bytes and ``mtime_ns`` (nanoseconds) as the file system reports them."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class FolderScan:
    """What :func:`scan_folder` found: image ``files`` sorted by path, and what it left out.

    ``skipped``: ``(path, reason)`` for files that look like images but cannot be used
    (empty, not a regular file, unreadable, a broken link); ``ignored``: ``(path, reason)``
    for other files (not an image type, hidden) and for cut symlink loops.
    """

    folder: Path
    files: list[FileStat] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def _walk(root: Path, scan: FolderScan) -> None:
    """Depth-first walk following symlinks, each real directory visited once (loops are cut)."""
    seen: set[tuple[int, int]] = set()
    st = root.stat()
    seen.add((st.st_dev, st.st_ino))
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel_dir), key=lambda e: e.name)
        except OSError as e:
            scan.skipped.append((rel_dir or ".", f"folder unreadable: {type(e).__name__}"))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name.startswith("."):
                scan.ignored.append((rel, "hidden"))
                continue
            try:
                info = entry.stat(follow_symlinks=True)
            except OSError as e:
                why = "broken link" if entry.is_symlink() else f"unreadable: {type(e).__name__}"
                (scan.skipped if Path(entry.name).suffix.lower() in FOLDER_SUFFIXES else scan.ignored).append(
                    (rel, why)
                )
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    scan.ignored.append((rel, "symlink loop (folder already scanned)"))
                else:
                    seen.add(key)
                    stack.append(rel)
                continue
            if Path(entry.name).suffix.lower() not in FOLDER_SUFFIXES:
                scan.ignored.append((rel, "not an image type"))
            elif not stat.S_ISREG(info.st_mode):
                scan.skipped.append((rel, "not a regular file"))
            elif info.st_size == 0:
                scan.skipped.append((rel, "empty file (0 bytes)"))
            else:
                scan.files.append(FileStat(rel, int(info.st_size), int(info.st_mtime_ns)))


def scan_folder(folder: str | os.PathLike[str]) -> FolderScan:
    """Every image file under ``folder`` (recursive, :data:`FOLDER_SUFFIXES` in any case).

    Only directory entries are read (no file is opened), so a scan of thousands of files
    takes a fraction of a second.  Raises ``FileNotFoundError`` for a missing folder and
    ``NotADirectoryError`` for a path that is not a folder.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"no folder at {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of images")
    scan = FolderScan(folder=root.resolve())
    _walk(root, scan)
    scan.files.sort(key=lambda f: f.path)
    return scan


def read_file(folder: str | os.PathLike[str], path: str) -> tuple[bytes, FileStat]:
    """The bytes of ``folder/path`` and its stat, refusing a file that changed while being read."""
    full = Path(folder) / path
    before = full.stat()
    data = full.read_bytes()
    after = full.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise ImageFileError(f"{path} changed while it was being read")
    return data, FileStat(path, int(after.st_size), int(after.st_mtime_ns))


# --------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class DecodedImage:
    """An RGB image decoded from a file, and the ``full_size`` (w, h) of the file's image as
    displayed (after EXIF rotation); smaller than ``full_size`` when decoded with ``draft``."""

    image: Image.Image
    full_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Decoded width / full width (1.0 without reduced-size decoding)."""
        return self.image.size[0] / self.full_size[0]


def _draft_target(
    size: tuple[int, int], min_side: int | None, box: tuple[int, int, int, int] | None
) -> tuple[int, int]:
    """The size to ask ``Image.draft`` for so that ``box`` (or the image) keeps >= ``min_side`` pixels a side."""
    w, h = size
    if min_side is None:
        return w, h
    bw, bh = (box[2] - box[0], box[3] - box[1]) if box else (w, h)
    s = min(1.0, min_side / max(1, min(bw, bh)))
    return max(1, int(w * s + 0.999)), max(1, int(h * s + 0.999))


_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees


def decode_image_bytes(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    draft_min_side: int | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> DecodedImage:
    """Untrusted file bytes → :class:`DecodedImage` (mode RGB, transparency on white).

    ``draft_min_side``: let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale as long as the
    image — or ``box``, a region in full-size displayed pixels that will be cropped — keeps
    at least that many pixels on its shorter side (several times faster for a
    12-megapixel photo; the model reads 224).  Raises :class:`ImageFileError`.
    """
    from .features import to_mode

    if not data:
        raise ImageFileError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(io.BytesIO(data))
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageFileError(f"image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise ImageFileError(
                    f"image of {w}x{h} = {w * h:,} pixels refused by the decompression-bomb guard "
                    f"(at most {max_pixels:,} pixels)"
                )
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            full = (h, w) if orientation in _SWAPS_AXES else (w, h)
            if im.format == "JPEG" and draft_min_side:
                target = _draft_target(full, draft_min_side, box)
                if orientation in _SWAPS_AXES:
                    target = (target[1], target[0])
                im.draft("RGB", target)
            im.load()  # the first frame of an animation; truncation shows here
            im = ImageOps.exif_transpose(im) or im
            return DecodedImage(to_mode(im, "RGB"), full)
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageFileError(f"refused by the decompression-bomb guard: {e}") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"not an image Pillow can read (expected {FORMATS})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as e:
        raise ImageFileError(f"corrupt or truncated image: {e}") from None


def load_file_image(folder: str | os.PathLike[str], path: str, *, draft_min_side: int | None = None) -> Image.Image:
    """The RGB image of ``folder/path`` (:func:`decode_image_bytes`); :class:`ImageFileError` if unusable."""
    try:
        data = (Path(folder) / path).read_bytes()
    except OSError as e:
        raise ImageFileError(f"{path}: cannot be read ({type(e).__name__})") from None
    return decode_image_bytes(data, draft_min_side=draft_min_side).image
