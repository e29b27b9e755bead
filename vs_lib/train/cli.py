"""``python -m vs_lib train``: train (or reuse) the encoder of one source of positives."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as paths
from ..models import load_encoder, torch_threads
from .config import BACKBONES, POSITIVES, default_config
from .registry import ensure_model, is_up_to_date, model_path

CLI_HELP = "train a contrastive encoder (positives: self_supervised, labels, clicks)"


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--positives", required=True, choices=POSITIVES, help="where positives come from")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="train for this many minutes of wall-clock time")
    budget.add_argument("--epochs", type=float, help="train for this many epochs")
    parser.add_argument("--out", type=Path, help="output file (default: data/models/<positives>.pt)")
    parser.add_argument("--profile", choices=paths.PROFILES, default="full", help="full (default) or smoke (seconds)")
    parser.add_argument("--backbone", choices=BACKBONES, default="cnn", help="network (default: the small CNN)")
    parser.add_argument("--force", action="store_true", help="retrain even when an up-to-date model exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: every core, or 1 when the machine is busy)"
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="adapt the photo encoder to this folder (vs_lib.train.folder)"
    )


def cli_main(args: argparse.Namespace) -> int:
    if args.folder is not None:  # a folder of the user's own images: label-free adaptation of the photo encoder
        from .folder import folder_main

        return folder_main(args)
    cfg = default_config(args.positives, args.profile, args.backbone)
    if args.minutes is not None:
        cfg.minutes, cfg.epochs = args.minutes, None
    elif args.epochs is not None:
        cfg.minutes, cfg.epochs = None, args.epochs
    cfg.seed = args.seed
    path = Path(args.out) if args.out else model_path(args.positives, args.profile, args.backbone)
    reused = not args.force and is_up_to_date(path, cfg)
    # this process is ours: one thread setting for the whole command
    with torch_threads(args.threads or None):
        path = ensure_model(args.positives, args.profile, backbone=args.backbone, force=args.force, cfg=cfg, out=path)
    enc = load_encoder(path)
    m = enc.metadata
    print(f"{'reused' if reused else 'trained'} {path}")
    print(f"  {enc}")
    print(f"  {m.get('train_seconds')} s, {m.get('epochs')} epochs, {m.get('train_images_per_second')} img/s")
    if m.get("evaluation"):
        print("  " + ", ".join(f"{k} {v:.4f}" for k, v in m["evaluation"].items() if isinstance(v, float)))
    return 0
