"""Where trained models live, and :func:`ensure_model`: train only what is missing or out of date.

``ensure_model(positives, profile)`` is what the notebooks and ``make models`` call: it
returns the model file, training it first when the file is missing or was trained by
another configuration or on other data.  The model's metadata records the *reuse key*
(:func:`~vs_lib.train.trainer.reuse_key`): the configuration's hash joined with the
fingerprint of the training data — images, labels and, for click positives, the click
pairs read from the log — so a changed click log retrains the click model.
"""

from __future__ import annotations

import time
from pathlib import Path

from filelock import FileLock

from .. import config as paths
from ..models import Encoder, load_encoder
from .config import BACKBONES, POSITIVES, TrainConfig, default_config
from .trainer import TrainingData, reuse_key, train_encoder, training_data


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


def stored_reuse_key(path: Path) -> str | None:
    """The reuse key recorded in the model file at ``path`` (None: no readable model there)."""
    try:
        key = load_encoder(path).metadata.get("reuse_key")
    except (OSError, ValueError):  # missing, or not a readable encoder file
        return None
    return str(key) if key is not None else None


def is_up_to_date(path: Path, cfg: TrainConfig, data: TrainingData) -> bool:
    """Is there a model at ``path`` trained by exactly ``cfg`` on exactly ``data``?"""
    return path.exists() and stored_reuse_key(path) == reuse_key(cfg, data)


def evaluate_on_protocol(encoder: Encoder) -> dict[str, float]:
    """The full protocol's figures (:func:`vs_lib.evaluate.ranking_metrics`) for the model's metadata.

    The gallery and query embeddings go through :func:`vs_lib.evaluate.cached_embed`, so the
    notebooks that evaluate the same model later read them instead of embedding again; the
    embedding speed is timed on the queries, embedded afresh.
    """
    from ..evaluate import cached_embed, default_protocol, ranking_metrics

    proto = default_protocol()
    t0 = time.perf_counter()
    encoder.embed(proto.query_images)
    speed = len(proto.query_images) / max(time.perf_counter() - t0, 1e-9)
    gallery = cached_embed(encoder, proto.gallery_images)
    queries = cached_embed(encoder, proto.query_images)
    m = ranking_metrics(queries, proto.query_labels, gallery, proto.gallery_labels)
    return {**m.as_row(), "dim": encoder.dim, "embed_images_per_second": round(speed, 1)}


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
    click_log: str | Path | None = None,
    data: TrainingData | None = None,
) -> Path:
    """Path of a trained model for ``positives``; trains only when missing or out of date.

    ``cfg`` defaults to :func:`default_config`; ``out`` to :func:`model_path`; ``data`` to
    :func:`training_data` of ``cfg`` (click positives: the interactions table of the database
    at ``click_log``, default the platform database).  Training checkpoints beside the file
    (``<file>.ckpt``), so an interrupted run resumes; the model is written atomically, under a
    lock (``<file>.lock``): a second caller asking for the same model waits and reuses it.  When
    ``cfg.eval_queries`` is None the model is also scored on the full protocol
    (:func:`evaluate_on_protocol`) and the figures stored in it.
    """
    cfg = cfg or default_config(positives, profile, backbone)
    path = Path(out) if out else model_path(positives, profile, backbone, models_dir)
    data = data if data is not None else training_data(cfg, click_log=click_log)
    if not force and is_up_to_date(path, cfg, data):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # two processes asking for the same model (a report beside `make models`): one trains, the other waits and reuses
    with FileLock(path.with_name(path.name + ".lock")):
        if not force and is_up_to_date(path, cfg, data):
            return path
        encoder = train_encoder(cfg, data=data, checkpoint=path.with_name(path.name + ".ckpt"), progress=progress)
        if cfg.eval_queries is None:
            encoder.metadata["evaluation"] = evaluate_on_protocol(encoder)
        encoder.save(path)
    return path
