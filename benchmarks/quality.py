"""Retrieval quality and speed of every embedding method on the course's protocol, as JSON.

Gallery = the 60,000 Fashion-MNIST training images, queries = the 10,000 test images,
relevant = same class, exact cosine search (``evaluate.protocol_metrics``; ``--profile
smoke`` uses the smoke protocol and smoke models instead).  Prints one JSON object: per
method the training seconds and images/s (from the model's metadata; 0 for untrained
baselines), embedding images/s, P@1, P@10, mAP@10, MAP@R — and, for each expectation
below, whether this run meets it.

What a good result looks like, and why:

- self-supervised: P@1 ≥ 0.87 and MAP@R ≥ 0.35 — above raw pixels on the first result
  without a single label;
- labels: P@1 ≥ 0.93 and MAP@R ≥ 0.85 — with human judgement each class should become one
  tight cluster;
- clicks: P@1 above raw pixels — noisy implicit feedback must still beat no learning at all;
- the four trained models' budgets (epochs, ``train.FULL_EPOCHS``) take ≤ 22 minutes of
  training together on a quiet 2-core machine — ``make models`` stays within its share of a
  first ``make report``; the seconds each model recorded are printed, with the machine's load
  average at the start and end of the run (a loaded machine trains the same models, slower);
- fine-tuned EfficientNet ≥ frozen EfficientNet + 0.05 P@1 — fine-tuning must pay for itself;
- the default encoder embeds ≥ 5,000 images/s — re-embedding a catalogue stays cheap.

Trained models are reused when present and up to date (the same ``train.ensure_model``
that ``make report`` uses); ``--retrain`` trains them again.  The whole process uses one
thread setting, made once at start-up (``--threads``, default 2).

    python benchmarks/quality.py                       # everything, reusing models
    python benchmarks/quality.py --methods pixels labels --retrain
    python benchmarks/quality.py --profile smoke --methods pixels labels   # minutes, smoke models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

METHODS = (
    "pixels",
    "pca",
    "untrained",
    "efficientnet_frozen",
    "self_supervised",
    "labels",
    "clicks",
    "efficientnet_finetuned",
)
TRAINED = {
    "self_supervised": ("self_supervised", "cnn"),
    "labels": ("labels", "cnn"),
    "clicks": ("clicks", "cnn"),
    "efficientnet_finetuned": ("labels", "efficientnet"),
}


def expectations(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Each expectation of the module docstring that this run measured, and whether it is met."""
    ss, lab, clk, pix = (results.get(m) for m in ("self_supervised", "labels", "clicks", "pixels"))
    eff_ft, eff_frozen = results.get("efficientnet_finetuned"), results.get("efficientnet_frozen")
    out = {}
    if ss:
        out["self_supervised P@1>=0.87 and MAP@R>=0.35"] = bool(ss["P@1"] >= 0.87 and ss["MAP@R"] >= 0.35)
    if lab:
        out["labels P@1>=0.93 and MAP@R>=0.85"] = bool(lab["P@1"] >= 0.93 and lab["MAP@R"] >= 0.85)
    if clk and pix:
        out["clicks P@1 > pixels P@1"] = bool(clk["P@1"] > pix["P@1"])
    trained = [results[m] for m in TRAINED if m in results]
    if len(trained) == len(TRAINED):
        total = sum(r["train_seconds"] for r in trained)
        out["the four models train in <=22 min together (quiet machine)"] = bool(total <= 22 * 60)
    if eff_ft and eff_frozen:
        out["efficientnet fine-tuned >= frozen + 0.05 P@1"] = bool(eff_ft["P@1"] >= eff_frozen["P@1"] + 0.05)
    default = lab or ss
    if default:
        out["default encoder embedding >= 5000 img/s"] = bool(default["embed_images_per_second"] >= 5000)
    return out


def measure(method: str, args: argparse.Namespace, train_images: Any, protocol: Any) -> dict[str, Any]:
    """Train or build one method's encoder and score it on the protocol."""
    from vs_lib import evaluate, models, train

    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if method in TRAINED:
        positives, backbone = TRAINED[method]
        path = train.ensure_model(positives, args.profile, backbone=backbone, force=args.retrain, progress=False)
        enc = models.load_encoder(path)
        train_s = float(enc.metadata.get("train_seconds", 0.0))
        train_ips = float(enc.metadata.get("train_images_per_second", 0.0))
        extra = {"model": str(path), "epochs": enc.metadata.get("epochs"), "fingerprint": enc.fingerprint}
    else:
        name = "efficientnet" if method == "efficientnet_frozen" else method
        enc = models.baseline_encoder(
            name,
            train_images=train_images if name == "pca" else None,
            image_size=32 if name == "efficientnet" else None,
        )
        train_s = time.perf_counter() - t0 if name == "pca" else 0.0  # PCA's "training" is its fit
        train_ips = len(train_images) / train_s if train_s else 0.0
    m = evaluate.protocol_metrics(enc, protocol)
    return {
        "train_seconds": round(train_s, 2),
        "train_images_per_second": round(train_ips, 1),
        "embed_images_per_second": round(m.embed_images_per_second, 1),
        **{k: round(v, 4) for k, v in m.as_row().items()},
        "dim": m.dim,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--retrain", action="store_true", help="train the models again even when up to date")
    p.add_argument("--profile", choices=("full", "smoke"), default="full")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the whole run (default 2)")
    args = p.parse_args(argv)

    import torch

    from vs_lib import data, evaluate

    torch.set_num_threads(args.threads)  # this script owns its process: one setting, at start-up
    load_start = os.getloadavg()
    ds = data.load_fashion_mnist()
    protocol = evaluate.profile_protocol(args.profile, ds)
    train_images = ds.train_images if args.profile == "full" else protocol.gallery_images
    results: dict[str, dict[str, Any]] = {}
    for method in args.methods:
        results[method] = measure(method, args, train_images, protocol)
        print(f"{method}: {json.dumps(results[method])}", file=sys.stderr, flush=True)
    out = {
        "protocol": f"{len(protocol.gallery_ids)} training images as gallery, {len(protocol.query_ids)} test queries, "
        "same class relevant, exact cosine",
        "profile": args.profile,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "methods": results,
        "expectations_met": expectations(results),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
