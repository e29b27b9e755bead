"""Where trained models live, and :func:`ensure_model`: train only what is missing or out of date.

``ensure_model(positives, profile)`` is what the notebooks and ``make report`` call: it
returns the model file, training it first when the file is missing or was trained by
another configuration (the configuration's hash is stored in the model's metadata).
"""

from __future__ import annotations

from pathlib import Path

from .. import config as paths
from ..models import load_encoder
from .config import BACKBONES, POSITIVES, TrainConfig, default_config
from .trainer import train_encoder


def model_path(positives: str, profile: str = "full", backbone: str = "cnn", models_dir: Path | None = None) -> Path:
    """Where :func:`ensure_model` keeps the model for ``positives`` / ``profile`` / ``backbone``.

    full → ``<models_dir>/<positives>.pt``; smoke → ``<models_dir>/smoke/<positives>.pt``;
    the fine-tuned EfficientNet (label positives) is ``efficientnet_finetuned.pt``.
    ``models_dir`` defaults to ``config.models_dir()``.
    """
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if profile not in paths.PROFILES:
        raise ValueError(f"profile must be one of {paths.PROFILES}, got {profile!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    root = Path(models_dir) if models_dir is not None else paths.models_dir()
    base = root if profile == "full" else root / "smoke"
    if backbone == "cnn":
        stem = positives
    elif (backbone, positives) == ("efficientnet", "labels"):
        stem = "efficientnet_finetuned"
    else:
        stem = f"{backbone}_{positives}"
    return base / f"{stem}.pt"


def stored_config_key(path: Path) -> str | None:
    """The configuration hash recorded in the model file at ``path`` (None: no readable model there)."""
    try:
        key = load_encoder(path).metadata.get("config_key")
    except (OSError, ValueError):  # missing, or not a readable encoder file
        return None
    return str(key) if key is not None else None


def is_up_to_date(path: Path, cfg: TrainConfig) -> bool:
    """Is there a model at ``path`` trained by exactly ``cfg``?"""
    return path.exists() and stored_config_key(path) == cfg.key()


def ensure_model(
    positives: str,
    profile: str = "full",
    *,
    backbone: str = "cnn",
    force: bool = False,
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    models_dir: Path | None = None,
) -> Path:
    """Path of a trained model for ``positives``; trains only when missing or out of date.

    ``cfg`` defaults to :func:`default_config`; ``out`` to :func:`model_path`.  Training
    checkpoints beside the file (``<file>.ckpt``), so an interrupted run resumes; the model
    is written atomically.  When ``cfg.eval_queries`` is None the model is also scored on the
    full protocol (:func:`vs_lib.evaluate.protocol_metrics`) and the figures stored in it.
    """
    cfg = cfg or default_config(positives, profile, backbone)
    path = Path(out) if out else model_path(positives, profile, backbone, models_dir)
    if not force and is_up_to_date(path, cfg):
        return path
    encoder = train_encoder(cfg, checkpoint=path.with_name(path.name + ".ckpt"), progress=progress)
    if cfg.eval_queries is None:
        from ..evaluate import protocol_metrics

        m = protocol_metrics(encoder)
        extra = {"dim": m.dim, "embed_images_per_second": m.embed_images_per_second}
        encoder.metadata["evaluation"] = {**m.as_row(), **extra}
    encoder.save(path)
    return path
