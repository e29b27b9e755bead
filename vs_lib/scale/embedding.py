"""Batch embedding, the indexing pipeline's embedding step: in this process, or as a Ray Data job.

``embed_inprocess(encoder, ids)`` embeds images by id here; ``embed_with_ray(encoder_path,
ids, out_parquet, num_cpus=2, address=None)`` runs the same step as a Ray Data job: a
dataset of ``(image_id, storage_key)`` rows, ``map_batches`` with an actor class
(:class:`EmbedActor`) that loads the encoder once and reads each image through its storage
key, and ``(image_id, embedding)`` rows written to Parquet.  Without ``address`` it starts
Ray on this machine (``ray.init(num_cpus=..., include_dashboard=False)``); with
``address="ray://head:10001"`` (or ``"auto"``) the same code runs on a cluster, where the
encoder file and the object store must be reachable by the workers (shared storage).  The
course's ``VS_*`` settings reach the actors through their ``runtime_env``.
``python -m vs_lib embed --engine {inprocess,ray} [--address ADDR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import config, data
from ..index.sync import storage_keys

__all__ = [
    "CLI_HELP",
    "EmbedActor",
    "InProcessEmbedding",
    "RayEmbedding",
    "cli_add_arguments",
    "cli_main",
    "embed_inprocess",
    "embed_with_ray",
    "images_by_id",
    "read_embeddings",
    "write_embeddings",
]

log = logging.getLogger(__name__)


@dataclass
class InProcessEmbedding:
    """``ids (n,)`` int64 and their ``embeddings (n, dim)`` float32, with the time it took."""

    ids: np.ndarray
    embeddings: np.ndarray
    seconds: float
    images_per_second: float
    path: str | None


@dataclass(frozen=True)
class RayEmbedding:
    """Timings of a Ray Data job (JSON-able): ``startup_seconds`` (``ray.init``),
    ``job_seconds`` (dataset, actors, embedding, writing), ``images_per_second`` (job only)."""

    n: int
    startup_seconds: float
    job_seconds: float
    images_per_second: float
    num_actors: int
    num_cpus: int
    address: str
    path: str
    engine: str = "ray"


# ====================================================================== images by id
def _keys_of(ids: np.ndarray, conn: sqlite3.Connection | None, db_path: str | os.PathLike[str] | None) -> np.ndarray:
    if conn is not None:
        return storage_keys(conn, ids)[1]
    with contextlib.closing(data.connect(db_path, readonly=True)) as own:
        return storage_keys(own, ids)[1]


def images_by_id(
    ids: Sequence[int] | np.ndarray,
    *,
    conn: sqlite3.Connection | None = None,
    db_path: str | os.PathLike[str] | None = None,
) -> list[np.ndarray]:
    """Pixels of ``ids``, each read through its ``images`` row's storage key (corpus or
    object store): a list of uint8 ``(H, W)`` / ``(H, W, 3)`` arrays.  ``UnknownImageError``
    for an id the table lacks."""
    keys = _keys_of(np.asarray(ids, np.int64).reshape(-1), conn, db_path)
    return [data.load_pixels(k) for k in keys]


# ====================================================================== Parquet
def _arrow_table(ids: np.ndarray, embeddings: np.ndarray) -> Any:
    import pyarrow as pa

    emb = np.ascontiguousarray(embeddings, np.float32)
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])
    return pa.table({"image_id": pa.array(np.asarray(ids, np.int64)), "embedding": col})


def write_embeddings(path: str | os.PathLike[str], ids: np.ndarray, embeddings: np.ndarray) -> Path:
    """Write ``(image_id int64, embedding list<float32>[d])`` rows to Parquet, atomically."""
    import pyarrow.parquet as pq

    ids = np.asarray(ids, np.int64)
    if np.ndim(embeddings) != 2 or len(embeddings) != len(ids):
        raise ValueError(f"embeddings must be (n, d) with n = len(ids) = {len(ids)}, got {np.shape(embeddings)}")
    with config.atomic_path(path) as tmp:
        pq.write_table(_arrow_table(ids, embeddings), tmp)
    return Path(path)


def read_embeddings(path: str | os.PathLike[str], sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (n,) int64, embeddings (n, d) float32)`` from a Parquet file written here
    (sorted by id unless ``sort=False``)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no embeddings file at {path}; run `python -m vs_lib embed` first")
    t = pq.read_table(path)
    if not {"image_id", "embedding"} <= set(t.column_names):
        raise ValueError(f"{path} lacks the columns image_id and embedding (has {t.column_names})")
    ids = t.column("image_id").to_numpy().astype(np.int64)
    col = t.column("embedding").combine_chunks()
    d = col.type.list_size if hasattr(col.type, "list_size") else len(col[0])
    emb = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(ids), d)
    if sort:
        order = np.argsort(ids, kind="stable")
        ids, emb = ids[order], emb[order]
    return ids, emb


# ====================================================================== in-process embedding
def embed_inprocess(
    encoder: Any,
    ids: Sequence[int] | np.ndarray,
    out_parquet: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 256,
    chunk: int = 8192,
    db_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> InProcessEmbedding:
    """Embed images by id in this process.  ``encoder``: an ``Encoder`` or the path of one."""
    from .. import models

    enc = models.load_encoder(Path(encoder)) if isinstance(encoder, str | os.PathLike) else encoder
    ids = np.asarray(ids, np.int64)
    out = np.empty((len(ids), enc.dim), np.float32)
    t0 = time.perf_counter()
    with contextlib.closing(data.connect(db_path, readonly=True)) as conn:
        keys = storage_keys(conn, ids)[1]
    starts: Iterator[int] | range = range(0, len(ids), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embed (in-process)", unit="chunk")
    for s in starts:
        images = [data.load_pixels(k) for k in keys[s : s + chunk]]
        out[s : s + len(images)] = enc.embed(images, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    if out_parquet is not None:
        write_embeddings(out_parquet, ids, out)
    return InProcessEmbedding(
        ids=ids,
        embeddings=out,
        seconds=seconds,
        images_per_second=len(ids) / max(seconds, 1e-9),
        path=str(out_parquet) if out_parquet is not None else None,
    )


# ====================================================================== Ray Data
class EmbedActor:
    """Ray Data actor: loads the encoder once, then embeds batches ``{"image_id", "storage_key"}``
    → ``{"image_id", "embedding"}``.  ``threads`` torch threads per actor (one actor per core)."""

    def __init__(self, encoder_path: str, threads: int = 1, batch_size: int = 256):
        import torch

        from .. import models

        torch.set_num_threads(max(1, int(threads)))  # this actor's own process
        self.encoder = models.load_encoder(encoder_path)
        self.batch_size = int(batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = [data.load_pixels(str(k)) for k in batch["storage_key"]]
        embeddings = np.asarray(self.encoder.embed(images, batch_size=self.batch_size), np.float32)
        return {"image_id": np.asarray(batch["image_id"], np.int64), "embedding": embeddings}


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """No progress bars or info logs from Ray Data during the job (settings restored after)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    quiet = {"enable_progress_bars": False, "print_on_execution_start": False, "enable_operator_progress_bars": False}
    before = {attr: getattr(ctx, attr) for attr in quiet if hasattr(ctx, attr)}
    loggers = {name: logging.getLogger(name) for name in ("ray", "ray.data", "ray._private")}
    levels = {name: lg.level for name, lg in loggers.items()}
    try:
        for attr in before:
            setattr(ctx, attr, quiet[attr])
        for lg in loggers.values():
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for attr, value in before.items():
            setattr(ctx, attr, value)
        for name, lg in loggers.items():
            lg.setLevel(levels[name])


def _start_ray(num_cpus: int, address: str | None, attempts: int = 3) -> bool:
    """Start (or join) Ray unless it runs already; True when this call started it.

    Starting a local node launches several processes that must register within Ray's own 30 s;
    on a busy machine that can fail, so a local start is tried ``attempts`` times before a
    ``RuntimeError`` says what happened.
    """
    import ray

    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        return True
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=int(num_cpus), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            break
        except Exception as err:  # Ray raises a bare Exception when its node does not come up
            ray.shutdown()
            if attempt == attempts:
                raise RuntimeError(
                    f"Ray could not start a local node in {attempts} attempts ({err}); the machine may be overloaded"
                ) from err
            log.warning("Ray did not start (attempt %d of %d): %s; retrying", attempt, attempts, err)
            time.sleep(2.0 * attempt)
    return True


def _run_job(
    encoder_path: Path,
    ids: np.ndarray,
    keys: np.ndarray,
    out_parquet: str | os.PathLike[str],
    batch_size: int,
    n_actors: int,
) -> int:
    """The dataset → actors → Parquet pipeline; returns how many embeddings were written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    # one block per batch, so that every actor gets work (no read tasks need a CPU)
    blocks = [
        pa.table(
            {"image_id": pa.array(ids[s : s + batch_size]), "storage_key": pa.array(keys[s : s + batch_size].tolist())}
        )
        for s in range(0, len(ids), batch_size)
    ]
    ds = ray.data.from_arrow(blocks).map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "encoder_path": str(encoder_path.resolve()),
            "threads": 1,
            "batch_size": min(256, batch_size),
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=1,
        runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("VS_")}},  # the course's settings
    )
    written = 0
    with config.atomic_path(out_parquet) as tmp:
        writer = None
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                table = _arrow_table(batch["image_id"], batch["embedding"])
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                written += len(table)
        finally:
            if writer is not None:
                writer.close()
        if written != len(ids):  # inside the block: a short file never replaces the target
            raise RuntimeError(f"the Ray job returned {written} embeddings for {len(ids)} ids")
    return written


def embed_with_ray(
    encoder_path: str | os.PathLike[str],
    ids: Sequence[int] | np.ndarray,
    out_parquet: str | os.PathLike[str],
    num_cpus: int = 2,
    address: str | None = None,
    batch_size: int = 512,
    *,
    num_actors: int | None = None,
    keep_running: bool = False,
    db_path: str | os.PathLike[str] | None = None,
) -> RayEmbedding:
    """Embed images by id as a Ray Data job and write ``(image_id, embedding)`` Parquet.

    ``address=None``: start Ray here with ``num_cpus`` CPUs and no dashboard, shut it down at
    the end (unless it was already running, or ``keep_running``); ``address="auto"`` or
    ``"ray://host:10001"``: connect to a cluster (the encoder path and the object store must
    be readable by its workers).  One actor per CPU (``num_actors``), each holding the
    encoder with one torch thread; storage keys are read here from the platform database.
    """
    import ray

    encoder_path = Path(encoder_path)
    if not encoder_path.exists():
        raise FileNotFoundError(f"no encoder at {encoder_path}")
    ids = np.asarray(ids, np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("ids must be a non-empty 1-D array of image ids")
    if num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    keys = _keys_of(ids, None, db_path)
    t0 = time.perf_counter()
    started_here = _start_ray(num_cpus, address)
    startup = time.perf_counter() - t0
    try:
        with _quiet_ray_data():
            cpus = int(ray.cluster_resources().get("CPU", num_cpus))
            n_actors = int(num_actors or max(1, cpus))
            t1 = time.perf_counter()
            _run_job(encoder_path, ids, keys, out_parquet, batch_size, n_actors)
            job = time.perf_counter() - t1
    finally:
        if started_here and not keep_running:
            ray.shutdown()
    return RayEmbedding(
        n=len(ids),
        startup_seconds=startup,
        job_seconds=job,
        images_per_second=len(ids) / max(job, 1e-9),
        num_actors=n_actors,
        num_cpus=cpus,
        address=address or "local",
        path=str(out_parquet),
    )


# ====================================================================== command line
CLI_HELP = "embed the corpus in-process or as a Ray Data job, to Parquet"


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("inprocess", "ray"),
        default="inprocess",
        help="inprocess (default) or a Ray Data job (local Ray, or --address)",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (e.g. ray://head:10001 or auto); default: start Ray here"
    )
    parser.add_argument(
        "--model",
        default="self_supervised",
        help="encoder name, loads <models_dir>/<NAME>.pt (default self_supervised)",
    )
    parser.add_argument("--out", type=Path, default=None, help="Parquet file (default data/embeddings/<model>.parquet)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for a local Ray instance (default 2)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per batch")
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N image ids (quick try)")


def cli_main(args: argparse.Namespace) -> int:
    model_path = config.models_dir() / f"{args.model}.pt"
    if not model_path.exists():
        raise FileNotFoundError(
            f"no encoder at {model_path}; train it first: python -m vs_lib train --positives {args.model}"
        )
    if not config.db_path().exists():
        raise FileNotFoundError(f"no platform database at {config.db_path()}; build it first: python -m vs_lib data")
    with contextlib.closing(data.connect(readonly=True)) as conn:
        ids = storage_keys(conn)[0]
    if args.limit:
        ids = ids[: int(args.limit)]
    out = args.out or config.data_dir() / "embeddings" / f"{args.model}.parquet"
    if args.engine == "ray":
        res: dict[str, Any] = asdict(
            embed_with_ray(
                model_path, ids, out, num_cpus=args.num_cpus, address=args.address, batch_size=args.batch_size
            )
        )
    else:
        r = embed_inprocess(model_path, ids, out, batch_size=min(args.batch_size, 256), progress=True)
        res = {
            "engine": "inprocess",
            "n": len(ids),
            "seconds": r.seconds,
            "images_per_second": r.images_per_second,
            "path": str(out),
        }
    print(json.dumps(res, indent=2))
    return 0
