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
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vs_lib import config, scale, train
from vs_lib import index as vi
from vs_lib.milvus_index import MilvusIndex


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, for a try)")
    ap.add_argument("--model", default="self_supervised")
    ap.add_argument("--growth-max", type=int, default=10_000_000)
    args = ap.parse_args()
    quick = args.quick
    out: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "load_average_at_start": os.getloadavg()}, "quick": quick}

    # ------------------------------------------------------------------ growth
    sizes = [s for s in (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000) if s <= args.growth_max]
    factory = "IVF1024,PQ16"
    if quick:
        sizes, factory = [5_000, 20_000, 50_000], "IVF64,PQ16"
    log(f"growth {factory} up to {sizes[-1]:,} (synthetic)")
    growth = scale.measure_growth(sizes, dim=128, factory=factory, train_size=20_000 if not quick else 3_000,
                                  n_queries=200, nprobe=16, threads=1, progress=False)
    big = [g for g in growth if g["N"] >= min(100_000, growth[-2]["N"])]
    out["growth"] = {
        "factory": factory, "nprobe": 16, "dim": 128, "synthetic": True, "threads": 1,
        "table": [{k: g[k] for k in ("N", "build_seconds", "add_seconds", "bytes", "qps", "recall", "recall_in_top10k")} for g in growth],
        "loglog_slopes": {c: scale.fit_loglog([g["N"] for g in big], [g[c] for g in big])["slope"]
                          for c in ("add_seconds", "bytes", "qps")},
    }

    # ------------------------------------------------------------------ embedding: Ray vs in-process
    profile = "smoke" if quick else "full"
    model_path = train.model_path(args.model, profile)
    if not model_path.exists():
        log(f"{model_path} missing; using the smoke model")
        model_path = train.ensure_model(args.model, "smoke", progress=False)
    n_ray = 2_000 if quick else 70_000
    n_inproc = 2_000 if quick else 10_000
    ids = np.arange(n_ray, dtype=np.int64) if quick else np.arange(70_000, dtype=np.int64)
    log(f"in-process embedding of {n_inproc:,} images with {model_path.name}")
    inproc = scale.embed_inprocess(model_path, ids[:n_inproc])
    with tempfile.TemporaryDirectory() as tmp:
        log(f"Ray Data job over {n_ray:,} images")
        ray_run = scale.embed_with_ray(model_path, ids, Path(tmp) / "e.parquet", num_cpus=2, batch_size=512)
        ray_ids, emb = scale.read_embeddings(Path(tmp) / "e.parquet")
    import torch

    out["embedding"] = {
        "model": str(model_path.name),
        "inprocess": {"n": n_inproc, "seconds": inproc["seconds"], "images_per_second": inproc["images_per_second"],
                      "torch_threads": torch.get_num_threads()},
        "ray": {k: ray_run[k] for k in ("n", "startup_seconds", "job_seconds", "images_per_second", "num_actors")},
        "ray_over_inprocess_throughput": ray_run["images_per_second"] / inproc["images_per_second"],
        "equal": bool(np.allclose(emb[:n_inproc], inproc["embeddings"], atol=1e-5)),
    }

    # ------------------------------------------------------------------ Milvus Lite vs FAISS
    rng = np.random.default_rng(0)
    q_rows = rng.choice(len(emb), 1000, replace=False)
    mask = np.ones(len(emb), bool)
    mask[q_rows] = False
    db, db_ids, queries = emb[mask], ray_ids[mask], emb[q_rows]
    truth = db_ids[vi.exact_search(db, queries, 10)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("milvus_lite_flat", "faiss_flat"):
            t0 = time.perf_counter()
            if name.startswith("milvus"):
                idx = MilvusIndex(emb.shape[1], uri=str(Path(tmp) / "bench.db"), collection="bench")
            else:
                idx = vi.VectorIndex(emb.shape[1], "flat")
            idx.add(db, db_ids)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, found = idx.search(queries, 10)
            batch = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(100):
                idx.search(queries[i:i + 1], 10)
            single = (time.perf_counter() - t0) / 100
            rows[name] = {"n": len(idx), "build_seconds": build, "qps_batch_1000": 1000 / batch,
                          "latency_ms_single_query": 1000 * single, "recall_at_10": vi.recall_at_k(found, truth),
                          "memory_bytes": idx.memory_bytes()}
            if name.startswith("milvus"):
                idx.drop()
                idx.close()
    out["milvus_vs_faiss"] = rows
    out["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2, default=config._json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
