"""Retrieval quality and speed of every embedding method, by the issue's protocol.

Gallery = the 60,000 Fashion-MNIST training images, queries = the 10,000 test images,
relevant = same class, exact cosine search.  Prints one JSON object: per method the
training seconds and images/s (from the model's metadata; 0 for untrained baselines),
embedding images/s, P@1, P@10, mAP@10, MAP@R — and which of the issue's targets are met.

Trained models are reused from ``data/models`` when present and up to date (the same
``train.ensure_model`` that ``make report`` uses); ``--retrain`` trains them again.

    python benchmarks/quality.py                       # everything, reusing models
    python benchmarks/quality.py --methods pixels labels --retrain
"""
from __future__ import annotations

import argparse
import json
import sys
import time

METHODS = ("pixels", "pca", "untrained", "efficientnet_frozen", "self_supervised", "labels", "clicks",
           "efficientnet_finetuned")


def targets(results: dict) -> dict:
    """The issue's targets, each with the measured numbers and met / missed / not measured."""
    def get(m, k):
        return results.get(m, {}).get(k)

    out = {}
    ss, lab, clk, pix = (results.get(m) for m in ("self_supervised", "labels", "clicks", "pixels"))
    if ss:
        out["self_supervised P@1>=0.87 and MAP@R>=0.35 in <=15 min"] = bool(
            ss["P@1"] >= 0.87 and ss["MAP@R"] >= 0.35 and ss["train_seconds"] <= 900)
    if lab:
        out["labels P@1>=0.93 and MAP@R>=0.85 in <=5 min"] = bool(
            lab["P@1"] >= 0.93 and lab["MAP@R"] >= 0.85 and lab["train_seconds"] <= 300)
    if clk and pix:
        out["clicks P@1 > pixels P@1 in <=5 min"] = bool(clk["P@1"] > pix["P@1"] and clk["train_seconds"] <= 300)
    if get("efficientnet_finetuned", "P@1") is not None and get("efficientnet_frozen", "P@1") is not None:
        out["efficientnet fine-tuned >= frozen + 0.05 P@1"] = bool(
            results["efficientnet_finetuned"]["P@1"] >= results["efficientnet_frozen"]["P@1"] + 0.05)
    default = lab or ss
    if default:
        out["default encoder embedding >= 5000 img/s"] = bool(default["embed_images_per_second"] >= 5000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--retrain", action="store_true", help="train the models again even when up to date")
    p.add_argument("--profile", choices=("full", "smoke"), default="full")
    args = p.parse_args(argv)

    import torch

    from vs_lib import data, models, train

    torch.set_num_threads(2)
    ds = data.load_fashion_mnist()
    results: dict = {}
    for method in args.methods:
        t0 = time.perf_counter()
        if method in ("self_supervised", "labels", "clicks", "efficientnet_finetuned"):
            positives, backbone = (("labels", "efficientnet") if method == "efficientnet_finetuned" else (method, "cnn"))
            path = train.ensure_model(positives, args.profile, backbone=backbone, force=args.retrain, progress=False)
            enc = models.load_encoder(path)
            train_s = float(enc.metadata.get("train_seconds", 0.0))
            train_ips = float(enc.metadata.get("train_images_per_second", 0.0))
            extra = {"model": str(path), "epochs": enc.metadata.get("epochs"), "fingerprint": enc.fingerprint}
        else:
            name = "efficientnet" if method == "efficientnet_frozen" else method
            enc = models.baseline_encoder(name, train_images=ds.train_images if name == "pca" else None,
                                          image_size=32 if name == "efficientnet" else None)
            train_s = time.perf_counter() - t0 if name == "pca" else 0.0  # PCA's "training" is its fit
            train_ips = len(ds.train_images) / train_s if train_s else 0.0
            extra = {}
        m = train.protocol_metrics(enc, ds)
        results[method] = {"train_seconds": round(train_s, 2), "train_images_per_second": round(train_ips, 1),
                           "embed_images_per_second": round(m["embed_images_per_second"], 1),
                           **{k: round(m[k], 4) for k in ("P@1", "P@10", "mAP@10", "MAP@R")},
                           "dim": m["dim"], **extra}
        print(f"{method}: {json.dumps(results[method])}", file=sys.stderr, flush=True)
    out = {"protocol": "gallery 60k train, queries 10k test, same class relevant, exact cosine",
           "torch_threads": torch.get_num_threads(), "methods": results, "targets_met": targets(results)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
