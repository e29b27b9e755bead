"""Scaling benchmark: prints JSON with

- ``growth``: a compressed FAISS index (IVF1024,PQ16, nprobe 16) grown over synthetic clustered
  vectors from 10k to 10M: N, build seconds, bytes, single-core QPS, recall@10 (+ fitted slopes);
- ``embedding``: the Ray Data job (local, 2 CPUs) against in-process embedding on this machine;
- ``milvus_vs_faiss``: Milvus Lite (FLAT) against FAISS flat at N = 70k real embeddings.

    python benchmarks/scale.py [--quick] [--model self_supervised] > scale.json

Progress goes to stderr.  Figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vs_lib import data, scale, train
from vs_lib import index as vi


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def growth(quick: bool, growth_max: int) -> dict:
    sizes = [s for s in (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000) if s <= growth_max]
    factory = "IVF1024,PQ16"
    if quick:
        sizes, factory = [5_000, 20_000, 50_000], "IVF64,PQ16"
    log(f"growth {factory} up to {sizes[-1]:,} (synthetic)")
    points = scale.measure_growth(
        sizes,
        dim=128,
        factory=factory,
        train_size=20_000 if not quick else 3_000,
        n_queries=200,
        nprobe=16,
        threads=1,
        progress=False,
    )
    big = [g for g in points if min(100_000, points[-2].N) <= g.N]
    columns = ("N", "build_seconds", "add_seconds", "bytes", "qps", "recall", "recall_in_top10k")
    return {
        "factory": factory,
        "nprobe": 16,
        "dim": 128,
        "synthetic": True,
        "threads": 1,
        "table": [{c: getattr(g, c) for c in columns} for g in points],
        "loglog_slopes": {
            c: scale.fit_loglog([g.N for g in big], [getattr(g, c) for g in big]).slope
            for c in ("add_seconds", "bytes", "qps")
        },
    }


def embedding(model: str, quick: bool, ids: np.ndarray, out: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """In-process against Ray Data on this machine; returns the figures and the Ray job's (ids, embeddings)."""
    import torch

    model_path = train.model_path(model, "smoke" if quick else "full")
    if not model_path.exists():
        log(f"{model_path} missing; using the smoke model")
        model_path = train.ensure_model(model, "smoke", progress=False)
    n_inproc = 2_000 if quick else 10_000
    log(f"in-process embedding of {n_inproc:,} images with {model_path.name}")
    inproc = scale.embed_inprocess(model_path, ids[:n_inproc])
    log(f"Ray Data job over {len(ids):,} images")
    ray_run = scale.embed_with_ray(model_path, ids, out, num_cpus=2, batch_size=512)
    ray_ids, emb = scale.read_embeddings(out)
    pos = np.searchsorted(ray_ids, ids[:n_inproc])
    figures = {
        "model": str(model_path.name),
        "inprocess": {
            "n": n_inproc,
            "seconds": inproc.seconds,
            "images_per_second": inproc.images_per_second,
            "torch_threads": torch.get_num_threads(),
        },
        "ray": asdict(ray_run),
        "ray_over_inprocess_throughput": ray_run.images_per_second / inproc.images_per_second,
        "equal": bool(np.allclose(emb[pos], inproc.embeddings, atol=1e-5)),
    }
    return figures, ray_ids, emb


def milvus_vs_faiss(ray_ids: np.ndarray, emb: np.ndarray, folder: Path) -> dict:
    rng = np.random.default_rng(0)
    q_rows = rng.choice(len(emb), 1000, replace=False)
    mask = np.ones(len(emb), bool)
    mask[q_rows] = False
    db, db_ids, queries = emb[mask], ray_ids[mask], emb[q_rows]
    truth = db_ids[vi.exact_topk(queries, db, 10)[1]]
    rows = {}
    for name in ("milvus_lite_flat", "faiss_flat"):
        t0 = time.perf_counter()
        if name.startswith("milvus"):
            idx = vi.create(emb.shape[1], "milvus", uri=str(folder / "bench.db"), collection="bench")
        else:
            idx = vi.create(emb.shape[1], "flat")
        idx.add(db, db_ids)
        build = time.perf_counter() - t0
        m = vi.measure_search(idx, queries, truth, k=10, single_budget=5.0, max_single=100)
        rows[name] = {"n": len(idx), "build_seconds": build, **asdict(m), "memory_bytes": idx.memory_bytes()}
        if isinstance(idx, vi.MilvusIndex):
            idx.drop()
            idx.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, for a try)")
    ap.add_argument("--model", default="self_supervised")
    ap.add_argument("--growth-max", type=int, default=10_000_000)
    args = ap.parse_args()
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()},
        "quick": args.quick,
    }
    out["growth"] = growth(args.quick, args.growth_max)
    with contextlib.closing(data.connect(readonly=True)) as conn:
        ids = vi.storage_keys(conn)[0]  # every image of the platform database
    ids = ids[:2_000] if args.quick else ids
    with tempfile.TemporaryDirectory() as tmp:
        out["embedding"], ray_ids, emb = embedding(args.model, args.quick, ids, Path(tmp) / "e.parquet")
        out["milvus_vs_faiss"] = milvus_vs_faiss(ray_ids, emb, Path(tmp))
    out["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
