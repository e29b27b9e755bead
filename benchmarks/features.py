"""Preprocessing, augmentation and HOG throughput, as JSON.

    python benchmarks/features.py [--images 20000] [--threads 1]

- ``preprocess_uint8_images_per_second``: ``features.Preprocess`` on a uint8 batch (the
  path training and batch embedding take);
- ``preprocess_pil_images_per_second``: the same on a list of PIL images (the path an
  upload takes, one decode per image);
- ``augment_images_per_second``: ``features.BatchAugment`` (every augmentation on) on
  batches of 512 preprocessed images;
- ``hog_images_per_second``: ``features.hog_features``.

A good result: preprocessing and augmentation run at least 10 times faster than the small
CNN trains (thousands of images per second on two cores), so they are never what a training
step waits for; ``ratio_uint8_to_pil`` shows why serving should decode once and preprocess
in batches.  Ratios are taken within one run, on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000, help="training images to process")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default 0: models.auto_threads())")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from vs_lib import data, features, models

    torch.set_num_threads(args.threads or models.auto_threads())  # this script owns its process: once, at start-up
    images = data.load_fashion_mnist().train_images[: args.images]
    pre = features.Preprocess()

    def rate(fn, n: int) -> float:
        t0 = time.perf_counter()
        fn()
        return n / max(time.perf_counter() - t0, 1e-9)

    pil = [Image.fromarray(a) for a in images[:2000]]
    batch = pre(images)
    aug = features.BatchAugment(fill=float(-pre.mean[0] / pre.std[0]))
    gen = torch.Generator().manual_seed(0)
    out = {
        "benchmark": "features",
        "images": len(images),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
        "preprocess_uint8_images_per_second": round(rate(lambda: pre(images), len(images))),
        "preprocess_pil_images_per_second": round(rate(lambda: pre(pil), len(pil))),
        "augment_images_per_second": round(
            rate(lambda: [aug(batch[s : s + 512], gen) for s in range(0, len(batch), 512)], len(batch))
        ),
        "hog_images_per_second": round(rate(lambda: features.hog_features(images), len(images))),
    }
    out["ratio_uint8_to_pil"] = round(
        out["preprocess_uint8_images_per_second"] / out["preprocess_pil_images_per_second"], 1
    )
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
