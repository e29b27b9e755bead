"""Paths, profiles, seeds and atomic file writing shared by every module.

Paths come from the package location, never from the working directory, so a
notebook executed by papermill from any folder finds the same data.  Each can be
moved with an environment variable:

- ``VS_DATA_DIR``    downloaded and generated data (default ``<repo>/data``)
- ``VS_MODELS_DIR``  trained encoders (default ``$VS_DATA_DIR/models``)
- ``VS_FIGURES_DIR`` figures and per-notebook JSON results (default ``<repo>/figures``)
- ``VS_PROFILE``     ``full`` (the real lesson) or ``smoke`` (tiny, for tests)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("full", "smoke")


def data_dir() -> Path:
    """Folder for downloaded and generated data (``$VS_DATA_DIR`` or ``<repo>/data``)."""
    return Path(os.environ.get("VS_DATA_DIR", ROOT / "data"))


def models_dir() -> Path:
    """Folder for trained encoders (``$VS_MODELS_DIR`` or ``data/models``)."""
    return Path(os.environ.get("VS_MODELS_DIR", data_dir() / "models"))


def figures_dir() -> Path:
    """Folder for figures (``$VS_FIGURES_DIR`` or ``<repo>/figures``)."""
    return Path(os.environ.get("VS_FIGURES_DIR", ROOT / "figures"))


def reports_dir() -> Path:
    return Path(os.environ.get("VS_REPORTS_DIR", ROOT / "reports"))


def db_path() -> Path:
    """The platform database (``$VS_DB`` or ``data/visual_search.db``)."""
    return Path(os.environ.get("VS_DB", data_dir() / "visual_search.db"))


def resolve_profile(profile: str = "full") -> str:
    """The profile to use: ``$VS_PROFILE`` when set, else ``profile``.

    Notebooks call this right after their ``parameters`` cell so that both papermill
    (which injects ``PROFILE``) and nbval (which can only set the environment) choose it.
    """
    chosen = os.environ.get("VS_PROFILE", profile)
    if chosen not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {chosen!r}")
    return chosen


def set_seeds(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (when installed)."""
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a requirement, but keep data usable alone
        return
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An exception (or a kill) inside the block leaves any previous file at ``path``
    untouched and removes the temporary file.

    >>> with atomic_path("out.npy") as tmp:   # doctest: +SKIP
    ...     np.save(tmp, array)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    return Path(path)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
