"""Offline evaluation speed and the metrics of every available model, as JSON.

    python benchmarks/evaluate.py [--k 10] [--cached]

- ``evaluate_seconds``: 10,000 test queries × 60,000 training images, from embeddings to
  every per-query metric and the bootstrap summary (exact top-k + vectorised metrics), for
  each model.  A good result is at most 60 s (``goal_seconds``): then every model can be
  re-scored after each training run without thinking about it.
- ``embed_seconds``: embedding the 70,000 images with the model (``--cached`` reuses the
  on-disk embedding cache instead and reports what it read).
- ``models``: mean and 95% bootstrap interval of every metric for the pixel baseline and
  every ``*.pt`` in the models folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cached", action="store_true", help="reuse cached embeddings (do not time embedding)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default 0: models.auto_threads())")
    args = ap.parse_args(argv)

    import torch

    from vs_lib import data, evaluate, models

    torch.set_num_threads(args.threads or models.auto_threads())  # this script owns its process: once, at start-up
    load_before = os.getloadavg()
    ds = data.load_fashion_mnist()
    proto = evaluate.default_protocol(ds)
    encoders = {"baseline:pixels": models.baseline_encoder("pixels")}
    for name, path in evaluate.saved_models().items():
        encoders[name] = models.load_encoder(path)

    out = {
        "benchmark": "evaluate",
        "queries": len(proto.query_ids),
        "gallery": len(proto.gallery_ids),
        "k": args.k,
        "goal_seconds": 60,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "embed_seconds": {},
        "evaluate_seconds": {},
        "models": {},
    }
    for name, enc in encoders.items():
        t0 = time.perf_counter()
        if args.cached:
            g = evaluate.cached_embed(enc, proto.gallery_images)
            q = evaluate.cached_embed(enc, proto.query_images)
        else:
            g = enc.embed(proto.gallery_images, batch_size=512)
            q = enc.embed(proto.query_images, batch_size=512)
        out["embed_seconds"][name] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        ev = evaluate.evaluate_embeddings(
            q,
            proto.query_labels,
            g,
            proto.gallery_labels,
            k=args.k,
            query_ids=proto.query_ids,
            gallery_ids=proto.gallery_ids,
            name=name,
        )
        summary = ev.summary(n_boot=args.n_boot)
        out["evaluate_seconds"][name] = {
            "total": round(time.perf_counter() - t0, 2),
            **{k: round(v, 2) for k, v in ev.seconds.items()},
            "dim": int(g.shape[1]),
        }
        out["models"][name] = {
            m: {
                "mean": round(float(r["mean"]), 4),
                "low": round(float(r["low"]), 4),
                "high": round(float(r["high"]), 4),
            }
            for m, r in summary.iterrows()
        }
    worst = max(v["total"] for v in out["evaluate_seconds"].values())
    out["max_evaluate_seconds"] = worst
    out["goal_met"] = worst <= out["goal_seconds"]
    out["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
