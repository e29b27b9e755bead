"""Scaling past one machine: batch embedding on Ray Data, binary codes, growth and capacity.

Three parts, each used by notebook ``09_scaling`` and ``benchmarks/scale.py``:

**Batch embedding** (the indexing pipeline's embedding step).
``embed_inprocess(encoder, ids)`` embeds images by id in this process;
``embed_with_ray(encoder_path, ids, out_parquet, num_cpus=2, address=None)`` runs the same
step as a Ray Data job: a dataset of ids, ``map_batches`` with an actor class
(:class:`EmbedActor`) that loads the encoder once and reads each image by id (corpus ids from
the Fashion-MNIST arrays, uploads by their storage key through the platform database),
and ``(image_id, embedding)`` rows written to Parquet.  Without ``address`` it starts Ray on
this machine (``ray.init(num_cpus=..., include_dashboard=False)``); with
``address="ray://head:10001"`` (or ``"auto"``) the same code runs on a cluster, where the
encoder file and the data must be reachable by the workers (shared storage).
``python -m vs_lib embed --engine {inprocess,ray} [--address ADDR]``.

**Binary embeddings** (as Pinterest ships them): ``binarize(x)`` keeps the sign of each
dimension, 1 bit instead of 32 (``np.packbits(x > 0)``); FAISS binary indexes rank by
Hamming distance (``binary_index``); ``hamming_distances`` is the NumPy bit-count
reference.  ``binary_recall`` measures recall@k against exact float search.

**Growth and capacity**: ``synthetic_stream`` yields clustered unit vectors in chunks
(synthetic, labelled so wherever shown); ``measure_growth`` grows one compressed FAISS
index (default ``IVF1024,PQ16``) chunk by chunk to 10M+ vectors, recording build time,
memory, single-core QPS and recall@10 at checkpoints (ground truth maintained exactly
alongside); ``fit_loglog`` fits the growth exponent; ``measure_bytes_per_vector`` measures
the per-vector cost of each encoding; ``capacity_plan`` turns those measured figures into
memory, shards, replicas, machines and embedding machine-hours for 100-200 B images.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import config

__all__ = [
    "CLI_HELP", "cli_add_arguments", "cli_main",
    "images_by_id", "embed_inprocess", "embed_with_ray", "write_embeddings", "read_embeddings", "EmbedActor",
    "binarize", "hamming_distances", "hamming_topk", "binary_index", "binary_recall",
    "synthetic_stream", "measure_growth", "fit_loglog", "measure_bytes_per_vector", "capacity_plan",
]

CORPUS_SIZE = 70_000
ENV_VARS = ("VS_DATA_DIR", "VS_MODELS_DIR", "VS_DB")


# ====================================================================== images by id
def images_by_id(ids: Sequence[int], *, corpus_images: np.ndarray | None = None, conn=None, db_path=None) -> list | np.ndarray:
    """Pixels of ``ids``: corpus ids (< 70,000) from the Fashion-MNIST arrays, others (uploads)
    from the object store through the ``images`` table's storage key.  Returns a uint8
    ``(n, 28, 28)`` array when all are corpus images, else a list of arrays."""
    from . import data

    ids = np.asarray(ids, np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError("image ids must be >= 0")
    corpus = ids < CORPUS_SIZE
    if corpus.all():
        imgs = corpus_images if corpus_images is not None else data.load_fashion_mnist().images
        return np.asarray(imgs[ids])
    own = conn is None
    conn = data.connect(db_path, readonly=True) if own else conn
    try:
        imgs = corpus_images if corpus_images is not None or not corpus.any() else data.load_fashion_mnist().images
        return [imgs[i] if i < CORPUS_SIZE else data.load_image(conn, int(i)) for i in ids.tolist()]
    finally:
        if own:
            conn.close()


def _embed_images(encoder, images, batch_size: int) -> np.ndarray:
    if isinstance(images, np.ndarray) or len({np.shape(im) for im in images}) <= 1:
        return np.asarray(encoder.embed(np.asarray(images) if not isinstance(images, np.ndarray) else images, batch_size=batch_size), np.float32)
    return np.asarray(encoder.embed(list(images), batch_size=batch_size), np.float32)


# ====================================================================== Parquet
def write_embeddings(path: str | os.PathLike, ids: np.ndarray, embeddings: np.ndarray) -> Path:
    """Write ``(image_id int64, embedding list<float32>[d])`` rows to Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.asarray(ids, np.int64)
    emb = np.ascontiguousarray(embeddings, np.float32)
    if emb.ndim != 2 or len(emb) != len(ids):
        raise ValueError(f"embeddings must be (n, d) with n = len(ids) = {len(ids)}, got {emb.shape}")
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])
    table = pa.table({"image_id": pa.array(ids), "embedding": col})
    with config.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_embeddings(path: str | os.PathLike, sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
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
def embed_inprocess(encoder, ids: Sequence[int], out_parquet: str | os.PathLike | None = None, *,
                    batch_size: int = 256, chunk: int = 8192, db_path=None, progress: bool = False) -> dict[str, Any]:
    """Embed images by id in this process.  ``encoder``: an ``Encoder`` or the path of one.

    Returns ``{"ids", "embeddings", "seconds", "images_per_second", "path"}``."""
    from . import models

    enc = models.load_encoder(encoder) if isinstance(encoder, (str, os.PathLike)) else encoder
    ids = np.asarray(ids, np.int64)
    out = np.empty((len(ids), enc.dim), np.float32)
    corpus = None
    t0 = time.perf_counter()
    starts = range(0, len(ids), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embed (in-process)", unit="chunk")
    for s in starts:
        part = ids[s:s + chunk]
        if corpus is None and (part < CORPUS_SIZE).any():
            from . import data

            corpus = data.load_fashion_mnist().images
        out[s:s + len(part)] = _embed_images(enc, images_by_id(part, corpus_images=corpus, db_path=db_path), batch_size)
    seconds = time.perf_counter() - t0
    if out_parquet is not None:
        write_embeddings(out_parquet, ids, out)
    return {"ids": ids, "embeddings": out, "seconds": seconds, "images_per_second": len(ids) / max(seconds, 1e-9),
            "path": str(out_parquet) if out_parquet is not None else None}


# ====================================================================== Ray Data
class EmbedActor:
    """Ray Data actor: loads the encoder once, then embeds batches ``{"image_id"}`` →
    ``{"image_id", "embedding"}``.  ``threads`` torch threads per actor (one actor per core)."""

    def __init__(self, encoder_path: str, env: dict[str, str] | None = None, threads: int = 1, batch_size: int = 256):
        for k, v in (env or {}).items():
            os.environ[k] = v
        import torch

        from . import models

        torch.set_num_threads(max(1, int(threads)))
        self.encoder = models.load_encoder(encoder_path)
        self.batch_size = int(batch_size)
        self.corpus = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(batch["image_id"], np.int64)
        if self.corpus is None and (ids < CORPUS_SIZE).any():
            from . import data

            self.corpus = data.load_fashion_mnist().images
        images = images_by_id(ids, corpus_images=self.corpus)
        return {"image_id": ids, "embedding": _embed_images(self.encoder, images, self.batch_size)}


def _quiet_ray_data() -> None:
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    for attr, value in (("enable_progress_bars", False), ("print_on_execution_start", False),
                        ("enable_operator_progress_bars", False)):
        if hasattr(ctx, attr):
            setattr(ctx, attr, value)
    for name in ("ray", "ray.data", "ray._private"):
        logging.getLogger(name).setLevel(logging.ERROR)


def embed_with_ray(
    encoder_path: str | os.PathLike,
    ids: Sequence[int],
    out_parquet: str | os.PathLike,
    num_cpus: int = 2,
    address: str | None = None,
    batch_size: int = 512,
    *,
    num_actors: int | None = None,
    keep_running: bool = False,
) -> dict[str, Any]:
    """Embed images by id as a Ray Data job and write ``(image_id, embedding)`` Parquet.

    ``address=None``: start Ray here with ``num_cpus`` CPUs and no dashboard, shut it down at
    the end (unless it was already running, or ``keep_running``); ``address="auto"`` or
    ``"ray://host:10001"``: connect to a cluster (the encoder path and image data must be
    readable by its workers).  One actor per CPU (``num_actors``), each holding the encoder
    with one torch thread.  The driver streams result batches into the Parquet file.

    Returns timings: ``startup_seconds`` (``ray.init``), ``job_seconds`` (dataset + actors +
    embedding + writing), ``images_per_second`` (job only), ``n``, ``num_actors``, ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    encoder_path = Path(encoder_path)
    if not encoder_path.exists():
        raise FileNotFoundError(f"no encoder at {encoder_path}")
    ids = np.asarray(ids, np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("ids must be a non-empty 1-D array of image ids")
    if num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    started_here = False
    t0 = time.perf_counter()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
        if address is None:
            ray.init(num_cpus=int(num_cpus), include_dashboard=False, ignore_reinit_error=True,
                     log_to_driver=False, logging_level="ERROR", configure_logging=True)
        else:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR")
        started_here = True
    startup = time.perf_counter() - t0
    try:
        _quiet_ray_data()
        cpus = int(ray.cluster_resources().get("CPU", num_cpus))
        n_actors = int(num_actors or max(1, cpus))
        env = {k: os.environ[k] for k in ENV_VARS if k in os.environ}
        t1 = time.perf_counter()
        # one block per batch, so that every actor gets work (no read tasks need a CPU)
        blocks = [pa.table({"image_id": pa.array(ids[s:s + batch_size])}) for s in range(0, len(ids), batch_size)]
        ds = ray.data.from_arrow(blocks)
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"encoder_path": str(encoder_path.resolve()), "env": env, "threads": 1,
                                   "batch_size": min(256, batch_size)},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=1,
        )
        written = 0
        with config.atomic_path(out_parquet) as tmp:
            writer = None
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    emb = np.ascontiguousarray(np.asarray(batch["embedding"], np.float32))
                    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])
                    table = pa.table({"image_id": pa.array(np.asarray(batch["image_id"], np.int64)), "embedding": col})
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                    written += len(emb)
            finally:
                if writer is not None:
                    writer.close()
        if written != len(ids):
            raise RuntimeError(f"the Ray job returned {written} embeddings for {len(ids)} ids")
        job = time.perf_counter() - t1
    finally:
        if started_here and not keep_running:
            ray.shutdown()
    return {"engine": "ray", "n": int(len(ids)), "startup_seconds": startup, "job_seconds": job,
            "images_per_second": len(ids) / max(job, 1e-9), "num_actors": n_actors, "num_cpus": cpus,
            "address": address or "local", "path": str(out_parquet)}


# ====================================================================== binary embeddings
def binarize(x: np.ndarray) -> np.ndarray:
    """Sign bits of ``(n, d)`` float vectors packed 8 per byte: ``(n, ceil(d/8))`` uint8."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected (n, d) vectors, got shape {x.shape}")
    return np.packbits(x > 0, axis=1)


def hamming_distances(q_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Reference Hamming distances by NumPy bit counts: ``(nq, n)`` int32 (independent of FAISS)."""
    q_codes, codes = np.asarray(q_codes, np.uint8), np.asarray(codes, np.uint8)
    out = np.empty((len(q_codes), len(codes)), np.int32)
    step = max(1, 2_000_000 // max(1, codes.size))
    for s in range(0, len(q_codes), step):
        out[s:s + step] = np.bitwise_count(q_codes[s:s + step, None, :] ^ codes[None, :, :]).sum(-1, dtype=np.int32)
    return out


def hamming_topk(q_codes: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force Hamming top-``k`` in NumPy: ``(distances (nq, k) int32, rows (nq, k) int64)``."""
    d = hamming_distances(q_codes, codes)
    rows = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, rows, 1), rows.astype(np.int64)


def binary_index(codes: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 16, M: int = 32):
    """A FAISS binary index over ``(n, nbytes)`` uint8 codes: ``"flat"`` (exhaustive Hamming,
    ``IndexBinaryFlat``), ``"ivf"`` (``IndexBinaryIVF``, ``nlist`` cells), ``"hnsw"``."""
    import faiss

    codes = np.ascontiguousarray(codes, np.uint8)
    nbits = codes.shape[1] * 8
    if kind == "flat":
        idx = faiss.IndexBinaryFlat(nbits)
    elif kind == "ivf":
        nlist = nlist or max(1, min(4096, int(4 * math.sqrt(len(codes)))))
        quantizer = faiss.IndexBinaryFlat(nbits)
        idx = faiss.IndexBinaryIVF(quantizer, nbits, int(nlist))
        idx.own_fields = True
        quantizer.this.disown()
        idx.train(codes)
        idx.nprobe = int(nprobe)
    elif kind == "hnsw":
        idx = faiss.IndexBinaryHNSW(nbits, int(M))
    else:
        raise ValueError(f"binary index kind must be 'flat', 'ivf' or 'hnsw', got {kind!r}")
    idx.add(codes)
    return idx


def binary_recall(database: np.ndarray, queries: np.ndarray, k: int = 10, kinds: Sequence[str] = ("flat",),
                  truth: np.ndarray | None = None, rerank: int = 0, threads: int = 1) -> list[dict[str, Any]]:
    """Recall@k of sign-binarised codes against exact float search (inner product), per kind.

    ``truth``: true top-k rows (computed with ``index.exact_search`` when not given).
    ``rerank > 0`` also reports Hamming top ``rerank·k`` re-ranked with the float vectors.
    Rows: kind, recall@k, bytes/vector (codes, and measured index RAM), build seconds, QPS
    (with ``threads`` FAISS threads; 1 = per core, and steady on a shared machine).
    """
    import faiss

    from .index import exact_search, recall_at_k

    database, queries = np.asarray(database, np.float32), np.asarray(queries, np.float32)
    truth = exact_search(database, queries, k) if truth is None else truth
    codes, q_codes = binarize(database), binarize(queries)
    rows = []
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        rows = _binary_rows(database, queries, codes, q_codes, truth, k, kinds, rerank)
    finally:
        faiss.omp_set_num_threads(prev)
    return rows


def _binary_rows(database, queries, codes, q_codes, truth, k, kinds, rerank) -> list[dict[str, Any]]:
    import faiss

    from .index import recall_at_k

    rows = []
    for kind in kinds:
        t0 = time.perf_counter()
        idx = binary_index(codes, kind)
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        _, found = idx.search(q_codes, k)
        secs = time.perf_counter() - t1
        row = {"kind": f"binary-{kind}", "recall": recall_at_k(found, truth, k), "code_bytes_per_vector": codes.shape[1],
               "index_bytes_per_vector": faiss.serialize_index_binary(idx).nbytes / len(codes),
               "build_seconds": build, "qps": len(queries) / max(secs, 1e-9)}
        rows.append(row)
        if rerank:
            _, cand = idx.search(q_codes, k * rerank)
            valid = cand >= 0
            sims = np.einsum("nd,ncd->nc", queries, database[np.where(valid, cand, 0)])
            sims[~valid] = -np.inf
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            rows.append({**row, "kind": f"binary-{kind}+rerank{rerank}",
                         "recall": recall_at_k(np.take_along_axis(cand, order, 1), truth, k),
                         "index_bytes_per_vector": row["index_bytes_per_vector"] + 4 * database.shape[1]})
    return rows


# ====================================================================== growth with N
def _synthetic_model(dim: int, n_clusters: int, intrinsic_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((dim, intrinsic_dim)))[0].T.astype(np.float32)  # (r, dim) orthonormal rows
    return centres, basis


def _synthetic_chunk(rng, centres, basis, m: int, spread: float, noise: float) -> np.ndarray:
    dim, r = centres.shape[1], basis.shape[0]
    x = centres[rng.integers(0, len(centres), m)]
    x += (rng.standard_normal((m, r), dtype=np.float32) * np.float32(spread / math.sqrt(r))) @ basis
    if noise:
        x += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(noise / math.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def synthetic_stream(n: int, dim: int = 128, *, n_clusters: int = 1000, spread: float = 0.6, seed: int = 0,
                     chunk: int = 250_000, intrinsic_dim: int = 16, noise: float = 0.1) -> Iterator[np.ndarray]:
    """Yield ``n`` SYNTHETIC clustered unit vectors in ``(≤ chunk, dim)`` float32 chunks.

    Real embeddings have a low intrinsic dimension; so do these: ``n_clusters`` random unit
    centres, each point = centre + a Gaussian of norm ≈ ``spread`` inside one shared random
    ``intrinsic_dim``-dimensional subspace + isotropic noise of norm ≈ ``noise``, normalised.
    (Isotropic 128-d blobs would make every point of a cluster almost equidistant from every
    other, and "the true top-10" meaningless at large N.)  Memory stays at one chunk; the
    stream for a seed is deterministic."""
    centres, basis = _synthetic_model(dim, n_clusters, intrinsic_dim, seed)
    rng = np.random.default_rng([seed, 1])
    for s in range(0, n, chunk):
        yield _synthetic_chunk(rng, centres, basis, min(chunk, n - s), spread, noise)


def synthetic_queries(n: int, dim: int = 128, *, n_clusters: int = 1000, spread: float = 0.6, seed: int = 0,
                      intrinsic_dim: int = 16, noise: float = 0.1) -> np.ndarray:
    """Queries from the same model as ``synthetic_stream(seed=seed)`` (fresh draws)."""
    centres, basis = _synthetic_model(dim, n_clusters, intrinsic_dim, seed)
    return _synthetic_chunk(np.random.default_rng([seed, 2]), centres, basis, n, spread, noise)


def _merge_topk(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge a chunk's similarities ``s (nq, m)`` (rows offset by ``offset``) into running top-k.

    Once ``k`` are held, only query rows with a similarity above their current k-th best are
    touched (after the first chunks, few are)."""
    if best_s.shape[1] == k:
        rows = np.flatnonzero((s > best_s[:, -1:]).any(axis=1))
        if rows.size == 0:
            return best_s, best_i
        if rows.size < len(s):
            best_s, best_i = best_s.copy(), best_i.copy()
            best_s[rows], best_i[rows] = _merge_topk(best_s[rows], best_i[rows], s[rows], offset, k)
            return best_s, best_i
    kk = min(k, s.shape[1])
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    cs = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
    ci = np.concatenate([best_i, part + offset], axis=1)
    order = np.argsort(-cs, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1)


def measure_growth(
    sizes: Sequence[int],
    dim: int = 128,
    factory: str = "IVF1024,PQ16",
    *,
    nprobe: int = 16,
    train_size: int = 100_000,
    n_queries: int = 200,
    k: int = 10,
    chunk: int = 250_000,
    seed: int = 0,
    threads: int = 1,
    build_threads: int | None = None,
    n_clusters: int = 1000,
    spread: float = 0.6,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Grow one compressed FAISS index over a synthetic stream and measure it at each size.

    The index (``factory``, inner product) is trained once on a ``train_size`` sample of the
    same distribution, then vectors are added chunk by chunk; at every N in ``sizes`` it
    records ``build_seconds`` (training + all adds so far, with ``build_threads`` threads,
    default all), ``bytes`` (FAISS serialized size: codes, ids, centroids), ``qps`` with
    ``threads`` search threads (default 1: per core) and ``recall@k`` against an
    exact top-k maintained alongside by NumPy matrix products, and ``recall_in_top10k``: the
    fraction of the true top-k found among the index's top ``10·k`` (what a re-ranking stage
    with the full vectors would recover).  Memory stays at one chunk plus the index.  Rows: N,
    build_seconds, add_seconds, train_seconds, bytes, bytes_per_vector, qps, recall,
    recall_in_top10k, synthetic=True.
    """
    import faiss

    sizes = sorted(int(s) for s in sizes)
    if not sizes or sizes[0] < 1:
        raise ValueError("sizes must be positive")
    q = synthetic_queries(n_queries, dim, n_clusters=n_clusters, spread=spread, seed=seed)
    prev_threads = faiss.omp_get_max_threads()
    build_threads = int(build_threads or prev_threads)
    faiss.omp_set_num_threads(build_threads)
    try:
        index = _no_polysemous(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
        train = next(synthetic_stream(train_size, dim, n_clusters=n_clusters, spread=spread, seed=seed + 1, chunk=train_size))
        t0 = time.perf_counter()
        index.train(train)
        train_s = time.perf_counter() - t0
        del train
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = int(nprobe)
        best_s = np.full((n_queries, 0), -np.inf, np.float32)
        best_i = np.zeros((n_queries, 0), np.int64)
        add_s, n, rows = 0.0, 0, []
        targets = iter(sizes)
        target = next(targets)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sizes[-1], desc=f"growing {factory} (synthetic)", unit="vec", unit_scale=True)
        for x in synthetic_stream(sizes[-1], dim, n_clusters=n_clusters, spread=spread, seed=seed, chunk=chunk):
            pos = 0
            while pos < len(x):
                take = min(len(x) - pos, target - n)
                part = x[pos:pos + take]
                t1 = time.perf_counter()
                index.add(part)
                add_s += time.perf_counter() - t1
                best_s, best_i = _merge_topk(best_s, best_i, q @ part.T, n, k)
                n += take
                pos += take
                if bar is not None:
                    bar.update(take)
                if n == target:
                    faiss.omp_set_num_threads(int(threads))
                    t2 = time.perf_counter()
                    _, found = index.search(q, k)
                    search_s = time.perf_counter() - t2
                    faiss.omp_set_num_threads(build_threads)
                    _, cand = index.search(q, min(n, 10 * k))  # candidates a re-ranking stage would get
                    nbytes = int(faiss.serialize_index(index).nbytes) if n <= 2_000_000 else _ivf_bytes(index)
                    from .index import recall_at_k

                    rows.append({"N": n, "factory": factory, "build_seconds": train_s + add_s, "add_seconds": add_s,
                                 "train_seconds": train_s, "bytes": nbytes, "bytes_per_vector": nbytes / n,
                                 "qps": n_queries / max(search_s, 1e-9), "recall": recall_at_k(found, best_i, k),
                                 "recall_in_top10k": float(np.mean([np.isin(t, c).mean() for t, c in zip(best_i, cand)])),
                                 "nprobe": nprobe, "threads": threads, "build_threads": build_threads, "synthetic": True})
                    target = next(targets, None)
                    if target is None:
                        break
            if target is None:
                break
        if bar is not None:
            bar.close()
    finally:
        faiss.omp_set_num_threads(prev_threads)
    return rows


def _no_polysemous(index):
    """Switch off FAISS's polysemous training of 8-bit PQ codes (a slow code-permutation
    optimisation, only useful for Hamming pre-filtering, which we do not use)."""
    import faiss

    for candidate in (faiss.downcast_index(index), faiss.try_extract_index_ivf(index)):
        if candidate is not None and hasattr(candidate, "do_polysemous_training"):
            candidate.do_polysemous_training = False
    return index


def _ivf_bytes(index) -> int:
    """RAM of an IVF index without serializing it (large N): lists (codes + ids) + quantizer + codebooks."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    inv = ivf.invlists
    lists = sum(inv.list_size(i) for i in range(ivf.nlist)) * (ivf.code_size + 8)
    extra = ivf.quantizer.ntotal * ivf.d * 4
    if isinstance(ivf, faiss.IndexIVFPQ):
        extra += ivf.pq.centroids.size() * 4
    return int(lists + extra)


def fit_loglog(n: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares fit ``y ≈ a · N^b`` on log-log axes: ``{"slope": b, "a": a, "r2": ...}``."""
    n, y = np.log(np.asarray(n, float)), np.log(np.asarray(y, float))
    if len(n) < 2:
        raise ValueError("need at least two points to fit a growth exponent")
    b, loga = np.polyfit(n, y, 1)
    pred = loga + b * n
    ss = ((y - y.mean()) ** 2).sum()
    return {"slope": float(b), "a": float(np.exp(loga)), "r2": float(1 - ((y - pred) ** 2).sum() / ss) if ss > 0 else 1.0}


# ====================================================================== capacity plan
ENCODINGS = {  # name -> FAISS factory (inner product) measured by measure_bytes_per_vector
    "float32": "Flat",
    "float16": "SQfp16",
    "SQ8": "SQ8",
    "PQ8": "PQ8",
    "PQ16": "PQ16",
    "PQ32": "PQ32",
    "PQ64": "PQ64",
    "binary": None,  # IndexBinaryFlat over sign bits
}


def measure_bytes_per_vector(x: np.ndarray, encodings: dict[str, str | None] | None = None, *,
                             n_small: int | None = None, train_size: int = 10_000, threads: int = 1) -> dict[str, dict[str, float]]:
    """Measure each encoding's per-vector cost on real vectors ``x (n, d)``: train the FAISS
    index once (on ``train_size`` vectors), add ``n_small`` vectors and serialize, add the
    rest and serialize again; the slope excludes fixed costs (codebooks, headers).  Also
    measures recall@10 against exact search for 200 queries held out from ``x``.  Returns
    ``{name: {"bytes_per_vector", "fixed_bytes", "recall", "train_seconds"}}``."""
    import faiss

    from .index import exact_search, recall_at_k

    encodings = ENCODINGS if encodings is None else encodings
    x = np.ascontiguousarray(x, np.float32)
    q, db = x[:200], x[200:]
    n = len(db)
    n_small = n_small or n // 2
    d = x.shape[1]
    truth = exact_search(db, q, 10)
    out = {}
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        for name, factory in encodings.items():
            t0 = time.perf_counter()
            if factory is None:
                codes = binarize(db)
                idx = faiss.IndexBinaryFlat(codes.shape[1] * 8)
                idx.add(codes[:n_small])
                sizes = [faiss.serialize_index_binary(idx).nbytes]
                idx.add(codes[n_small:])
                sizes.append(faiss.serialize_index_binary(idx).nbytes)
                found = idx.search(binarize(q), 10)[1]
            else:
                m = factory.split(",")[-1]
                if m.startswith("PQ") and d % int(m[2:].split("x")[0]):
                    continue
                idx = _no_polysemous(faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT))
                idx.train(db[: min(n, train_size)])
                idx.add(db[:n_small])
                sizes = [faiss.serialize_index(idx).nbytes]
                idx.add(db[n_small:])
                sizes.append(faiss.serialize_index(idx).nbytes)
                found = idx.search(q, 10)[1]
            per = (sizes[1] - sizes[0]) / (n - n_small)
            out[name] = {"bytes_per_vector": float(per), "fixed_bytes": float(sizes[1] - per * n),
                         "recall": recall_at_k(found, truth, 10), "build_seconds": time.perf_counter() - t0}
    finally:
        faiss.omp_set_num_threads(prev)
    return out


def capacity_plan(
    n_images: float,
    bytes_per_vector: dict[str, float],
    *,
    id_bytes: float = 8.0,
    ram_per_machine_gb: float = 256.0,
    usable_fraction: float = 0.7,
    qps_at: Any = None,
    peak_qps: float = 50_000.0,
    cores_per_machine: int = 32,
    min_replicas: int = 2,
    embed_images_per_core_second: float | None = None,
    embed_cores: int = 32,
) -> list[dict[str, Any]]:
    """Memory, shards, replicas and machines to serve ``n_images`` under each encoding.

    - total bytes = n · (bytes_per_vector + ``id_bytes``);
    - shards = ceil(total / (RAM per machine · ``usable_fraction``)), one shard per machine;
    - every query fans out to every shard (scatter-gather), so one replica set handles
      ``qps_at(n / shards) · cores_per_machine`` queries/s (``qps_at``: measured single-core
      QPS as a function of vectors per shard, e.g. the fitted growth law); replicas =
      max(``min_replicas``, ceil(peak_qps / that)); machines = shards · replicas;
    - embedding: core-hours = n / ``embed_images_per_core_second`` / 3600, and the wall-clock
      days on ``embed_cores``·1000 cores.
    """
    ram = ram_per_machine_gb * 1e9 * usable_fraction
    rows = []
    for name, bpv in bytes_per_vector.items():
        total = n_images * (bpv + id_bytes)
        shards = max(1, math.ceil(total / ram))
        row = {"encoding": name, "n_images": n_images, "bytes_per_vector": bpv + id_bytes,
               "total_tb": total / 1e12, "shards": shards, "vectors_per_shard": n_images / shards}
        if qps_at is not None:
            per_shard = float(qps_at(n_images / shards)) * cores_per_machine
            replicas = max(min_replicas, math.ceil(peak_qps / max(per_shard, 1e-9)))
            row.update({"qps_per_shard": per_shard, "replicas": replicas, "machines": shards * replicas})
        if embed_images_per_core_second:
            core_h = n_images / embed_images_per_core_second / 3600
            row.update({"embed_core_hours": core_h, "embed_days_on_1000_machines": core_h / (embed_cores * 1000) / 24})
        rows.append(row)
    return rows


# ====================================================================== command line
CLI_HELP = "embed the corpus in-process or as a Ray Data job, to Parquet"


def cli_add_arguments(parser) -> None:
    parser.add_argument("--engine", choices=("inprocess", "ray"), default="inprocess",
                        help="inprocess (default) or a Ray Data job (local Ray, or --address)")
    parser.add_argument("--address", default=None, help="Ray cluster address (e.g. ray://head:10001 or auto); default: start Ray here")
    parser.add_argument("--model", default="self_supervised", help="encoder name, loads <models_dir>/<NAME>.pt (default self_supervised)")
    parser.add_argument("--out", type=Path, default=None, help="Parquet file (default data/embeddings/<model>.parquet)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for a local Ray instance (default 2)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per batch")
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N image ids (quick try)")


def cli_main(args) -> int:
    from . import data

    model_path = config.models_dir() / f"{args.model}.pt"
    if not model_path.exists():
        raise FileNotFoundError(f"no encoder at {model_path}; train it first: python -m vs_lib train --positives {args.model}")
    if config.db_path().exists():
        conn = data.connect(readonly=True)
        try:
            ids = np.asarray(data.read_table("images", conn)["id"], np.int64)
        finally:
            conn.close()
    else:
        ids = np.arange(CORPUS_SIZE, dtype=np.int64)
    if args.limit:
        ids = ids[: int(args.limit)]
    out = args.out or config.data_dir() / "embeddings" / f"{args.model}.parquet"
    if args.engine == "ray":
        res = embed_with_ray(model_path, ids, out, num_cpus=args.num_cpus, address=args.address, batch_size=args.batch_size)
    else:
        r = embed_inprocess(model_path, ids, out, batch_size=min(args.batch_size, 256), progress=True)
        res = {"engine": "inprocess", "n": int(len(ids)), "seconds": r["seconds"], "images_per_second": r["images_per_second"], "path": str(out)}
    print(json.dumps(res, indent=2))
    return 0
