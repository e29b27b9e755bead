"""Contact sheets: a query (crop box drawn), its results with scores; duplicate groups side by side.

Drawn with PIL only, so the command line needs no plotting library.  ``load(path)`` gives
the image of a collection path (e.g. :meth:`Collection.image`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .. import config

__all__ = ["groups_sheet", "search_sheet", "write_png"]

CELL = 160  # pixels per thumbnail
TEXT = 30  # pixels of caption under each thumbnail
Loader = Callable[[str], Image.Image]


def _font(size: int = 11) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _tile(image: Image.Image, caption: Sequence[str], frame: str | None = None) -> Image.Image:
    tile = Image.new("RGB", (CELL, CELL + TEXT), "white")
    thumb = image.convert("RGB").copy()
    thumb.thumbnail((CELL - 8, CELL - 8), Image.Resampling.LANCZOS)
    tile.paste(thumb, ((CELL - thumb.width) // 2, (CELL - thumb.height) // 2))
    draw = ImageDraw.Draw(tile)
    if frame:
        draw.rectangle((1, 1, CELL - 2, CELL - 2), outline=frame, width=3)
    font = _font()
    for i, line in enumerate(caption[:2]):
        text = line if len(line) <= 26 else "…" + line[-25:]
        draw.text((4, CELL + 2 + 13 * i), text, fill="black", font=font)
    return tile


def _with_box(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    if box is None:
        return image
    out = image.convert("RGB").copy()
    s = out.width / max(1, image.width)
    ImageDraw.Draw(out).rectangle(tuple(int(v * s) for v in box), outline="red", width=max(2, out.width // 100))
    return out


def _grid(rows: list[list[Image.Image]]) -> Image.Image:
    width = max(len(r) for r in rows) * CELL
    sheet = Image.new("RGB", (width, len(rows) * (CELL + TEXT)), "white")
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            sheet.paste(tile, (j * CELL, i * (CELL + TEXT)))
    return sheet


def search_sheet(queries: Sequence[Image.Image], results: Sequence[Any], load: Loader) -> Image.Image:
    """One row per query: the query (crop box in red, full-size coordinates), then each hit
    with its rank, score, path and collapsed near-duplicates (``results``: SearchResult)."""
    rows = []
    for q, found in zip(queries, results, strict=True):
        box = found.crop
        if box is not None and q.size != tuple(found.image_size):
            s = q.width / found.image_size[0]
            box = tuple(int(v * s) for v in box)
        row = [_tile(_with_box(q, box), ["query" + (" (crop)" if box else ""), found.query], frame="blue")]
        for h in found.results:
            dups = f" +{h.duplicates} dup" if h.duplicates else ""
            row.append(_tile(load(h.path), [f"#{h.rank}  {h.score:.3f}{dups}", h.path]))
        rows.append(row)
    return _grid(rows)


def groups_sheet(groups: Sequence[Any], load: Loader, max_groups: int = 30, max_members: int = 8) -> Image.Image:
    """One row per duplicate group (``kind``, then up to ``max_members`` images with their paths)."""
    rows = []
    for g in list(groups)[:max_groups]:
        row = [
            _tile(load(p), [f"{g.kind} ({len(g.paths)})" if i == 0 else "", p])
            for i, p in enumerate(g.paths[:max_members])
        ]
        rows.append(row)
    if not rows:
        blank = Image.new("RGB", (CELL, CELL), "white")
        rows = [[_tile(blank, ["no duplicates", ""])]]
    return _grid(rows)


def write_png(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save ``image`` as PNG at ``path`` (atomically)."""
    path = Path(path)
    with config.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
