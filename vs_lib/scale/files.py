"""Embedding the files of a folder (a user's collection) in-process or as a Ray Data job.

``embed_files(encoder, folder, paths)`` reads each file once: its bytes give the SHA-256, the
perceptual hash and the decoded image (reduced-size JPEG decoding where the encoder needs fewer
pixels); unreadable files come back with their error instead of stopping the batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ray_runtime import quiet_ray_data, start_ray

__all__ = ["FileEmbedActor", "FileEmbedding", "embed_file_batch", "embed_files"]


@dataclass
class FileEmbedding:
    """Per file, in the order asked: what was read and its embedding.

    ``paths`` (n,) relative to the folder; ``sha256`` of the bytes embedded, ``size`` and
    ``mtime_ns`` of the file as read; ``phash`` (n,) uint64 perceptual hashes;
    ``embeddings`` (n, dim) float32 L2-normalised (zero rows where ``errors`` is not empty:
    the file vanished, changed while read, or is not a usable image).
    """

    paths: list[str]
    sha256: list[str]
    size: np.ndarray
    mtime_ns: np.ndarray
    phash: np.ndarray
    embeddings: np.ndarray
    errors: list[str]

    @property
    def ok(self) -> np.ndarray:
        """(n,) bool: the files embedded."""
        return np.array([not e for e in self.errors], dtype=bool)

    @classmethod
    def concat(cls, parts: Sequence[FileEmbedding], dim: int) -> FileEmbedding:
        if not parts:
            empty = np.zeros(0, np.int64)
            return cls([], [], empty, empty, np.zeros(0, np.uint64), np.zeros((0, dim), np.float32), [])
        return cls(
            [p for part in parts for p in part.paths],
            [h for part in parts for h in part.sha256],
            np.concatenate([part.size for part in parts]),
            np.concatenate([part.mtime_ns for part in parts]),
            np.concatenate([part.phash for part in parts]),
            np.concatenate([part.embeddings for part in parts]),
            [e for part in parts for e in part.errors],
        )


def embed_file_batch(
    encoder: Any, folder: str | os.PathLike[str], paths: Sequence[str], *, draft_min_side: int | None = 224
) -> FileEmbedding:
    """Read, hash, decode and embed ``paths`` of ``folder`` (one batch; errors are recorded, not raised)."""
    import hashlib

    from .. import folders
    from ..serving.hashing import perceptual_hash

    n = len(paths)
    sha, errors = [""] * n, [""] * n
    size, mtime = np.zeros(n, np.int64), np.zeros(n, np.int64)
    phash = np.zeros(n, np.uint64)
    images, kept = [], []
    for i, path in enumerate(paths):
        try:
            raw, st = folders.read_file(folder, path)
            decoded = folders.decode_image_bytes(raw, draft_min_side=draft_min_side)
        except FileNotFoundError:
            errors[i] = "deleted before it could be read"
            continue
        except (OSError, folders.ImageFileError) as e:
            errors[i] = str(e) if isinstance(e, folders.ImageFileError) else f"cannot be read ({type(e).__name__})"
            continue
        sha[i], size[i], mtime[i] = hashlib.sha256(raw).hexdigest(), st.size, st.mtime_ns
        images.append(decoded.image)
        kept.append(i)
    emb = np.zeros((n, encoder.dim), np.float32)
    if images:
        emb[kept] = np.asarray(encoder.embed(images, batch_size=max(1, len(images))), np.float32)
        phash[kept] = perceptual_hash(images)
    return FileEmbedding(list(paths), sha, size, mtime, phash, emb, errors)


class FileEmbedActor:
    """Ray Data actor for a folder: loads the encoder once, then turns batches ``{"path"}`` into
    the columns of :class:`FileEmbedding` (through :func:`embed_file_batch`)."""

    def __init__(self, encoder_path: str, folder: str, threads: int = 1, draft_min_side: int | None = 224):
        import torch

        from .. import models

        torch.set_num_threads(max(1, int(threads)))  # this actor's own process
        self.encoder = models.load_encoder(encoder_path)
        self.folder = folder
        self.draft_min_side = draft_min_side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        r = embed_file_batch(
            self.encoder, self.folder, [str(p) for p in batch["path"]], draft_min_side=self.draft_min_side
        )
        return {
            "path": np.array(r.paths, dtype=object),
            "sha256": np.array(r.sha256, dtype=object),
            "size": r.size,
            "mtime_ns": r.mtime_ns,
            "phash": r.phash,
            "embedding": r.embeddings,
            "error": np.array(r.errors, dtype=object),
        }


def _files_with_ray(
    encoder_path: Path, folder: str, paths: Sequence[str], batch_size: int, address: str | None, num_cpus: int
) -> list[FileEmbedding]:
    import ray

    started_here = start_ray(num_cpus, address)
    try:
        with quiet_ray_data():
            n_actors = max(1, int(ray.cluster_resources().get("CPU", num_cpus)))
            rows = [{"path": p} for p in paths]
            ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(paths) // batch_size))).map_batches(
                FileEmbedActor,
                fn_constructor_kwargs={"encoder_path": str(encoder_path.resolve()), "folder": str(folder)},
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                num_cpus=1,
                runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("VS_")}},
            )
            parts = []
            for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                parts.append(
                    FileEmbedding(
                        [str(p) for p in b["path"]],
                        [str(h) for h in b["sha256"]],
                        np.asarray(b["size"], np.int64),
                        np.asarray(b["mtime_ns"], np.int64),
                        np.asarray(b["phash"], np.uint64),
                        np.asarray(b["embedding"], np.float32).reshape(len(b["path"]), -1),
                        [str(e) for e in b["error"]],
                    )
                )
    finally:
        if started_here:
            ray.shutdown()
    return parts


def embed_files(
    encoder: Any,
    folder: str | os.PathLike[str],
    paths: Sequence[str],
    *,
    engine: str = "inprocess",
    encoder_path: str | os.PathLike[str] | None = None,
    address: str | None = None,
    num_cpus: int = 2,
    batch_size: int = 32,
    progress: bool = False,
    on_batch: Any = None,
) -> FileEmbedding:
    """Embed files of ``folder`` in this process or as a Ray Data job (``engine="ray"``).

    Ray needs ``encoder_path``, the saved encoder its actors load (and, on a cluster at
    ``address``, a folder its workers can read).  Results come back in the order of
    ``paths``.  ``on_batch(part)`` is called after each in-process batch (the collection
    saves its progress there, so an interrupted run loses at most one batch).
    """
    if engine not in ("inprocess", "ray"):
        raise ValueError(f"engine must be 'inprocess' or 'ray', got {engine!r}")
    paths = list(paths)
    if engine == "ray":
        if encoder_path is None or not Path(encoder_path).exists():
            raise FileNotFoundError(f"a Ray job loads the encoder from a file; none at {encoder_path}")
        parts = _files_with_ray(Path(encoder_path), str(Path(folder).resolve()), paths, batch_size, address, num_cpus)
        merged = FileEmbedding.concat(parts, encoder.dim)
        order = {p: i for i, p in enumerate(merged.paths)}
        pick = [order[p] for p in paths]
        return FileEmbedding(
            [merged.paths[i] for i in pick],
            [merged.sha256[i] for i in pick],
            merged.size[pick],
            merged.mtime_ns[pick],
            merged.phash[pick],
            merged.embeddings[pick],
            [merged.errors[i] for i in pick],
        )
    from tqdm.auto import tqdm

    done: list[FileEmbedding] = []
    with tqdm(
        total=len(paths), desc=f"embed ({getattr(encoder, 'name', 'encoder')})", unit="img", disable=not progress
    ) as bar:
        for s in range(0, len(paths), batch_size):
            part = embed_file_batch(encoder, folder, paths[s : s + batch_size])
            done.append(part)
            bar.update(len(part.paths))
            if on_batch is not None:
                on_batch(part)
    return FileEmbedding.concat(done, encoder.dim)


# ====================================================================== command line
