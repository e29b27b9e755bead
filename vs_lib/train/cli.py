"""``python -m vs_lib train``: train (or reuse) the encoder of one source of positives.

The budget is epochs (default: the course's, :data:`~vs_lib.train.config.FULL_EPOCHS`),
seeded, on a fixed number of threads, so the same command gives the same model on every
run.  Each option below maps to one field of the configuration (:func:`config_from_args`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as paths
from ..models import load_encoder
from .config import BACKBONES, POSITIVES, TrainConfig, default_config
from .registry import ensure_model, is_up_to_date, model_path
from .trainer import training_data

CLI_HELP = "train a contrastive encoder (positives: self_supervised, labels, clicks)"


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--positives", required=True, choices=POSITIVES, help="where positives come from")
    parser.add_argument("--epochs", type=float, help="training budget in epochs (default: the course's)")
    parser.add_argument("--out", type=Path, help="output file (default: data/models/<positives>.pt)")
    parser.add_argument("--profile", choices=paths.PROFILES, default="full", help="full (default) or smoke (seconds)")
    parser.add_argument("--backbone", choices=BACKBONES, default="cnn", help="network (default: the small CNN)")
    parser.add_argument("--force", action="store_true", help="retrain even when an up-to-date model exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch threads while training (default 2; part of the configuration)"
    )
    parser.add_argument(
        "--clicks-db",
        type=Path,
        help="clicks: the database whose interactions table is the click log (default: the platform database)",
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="adapt the photo encoder to this folder (vs_lib.train.folder)"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration the command trains: the course's default with the options given."""
    cfg = default_config(args.positives, args.profile, args.backbone)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.threads is not None:
        cfg.threads = args.threads
    cfg.seed = args.seed
    TrainConfig.from_dict(cfg.to_dict())  # validate the options
    return cfg


def cli_main(args: argparse.Namespace) -> int:
    if args.folder is not None:  # a folder of the user's own images: label-free adaptation of the photo encoder
        from .folder import folder_main

        return folder_main(args)
    cfg = config_from_args(args)
    path = Path(args.out) if args.out else model_path(args.positives, args.profile, args.backbone)
    data = training_data(cfg, click_log=args.clicks_db)
    if data.click_log is not None:
        print(f"click log: {data.click_log.describe()}")
    reused = not args.force and is_up_to_date(path, cfg, data)
    path = ensure_model(
        args.positives, args.profile, backbone=args.backbone, force=args.force, cfg=cfg, out=path, data=data
    )
    enc = load_encoder(path)
    m = enc.metadata
    print(f"{'reused' if reused else 'trained'} {path}")
    print(f"  {enc}")
    print(
        f"  {m.get('train_seconds')} s, {m.get('epochs')} epochs on {m.get('threads')} threads, "
        f"{m.get('train_images_per_second')} img/s"
    )
    if m.get("evaluation"):
        print("  " + ", ".join(f"{k} {v:.4f}" for k, v in m["evaluation"].items() if isinstance(v, float)))
    return 0
