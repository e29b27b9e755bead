"""What determines a trained model: :class:`TrainConfig`, and the course's defaults.

A configuration is plain data; its hash (:meth:`TrainConfig.key`) is stored in every model
file, so a model is reused exactly when it was trained by the same configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .. import config as paths
from ..models import default_arch

POSITIVES = ("self_supervised", "labels", "clicks")
BACKBONES = ("cnn", "resnet", "efficientnet")
#: label-free feature spaces whose nearest neighbours can serve as self-supervised positives
NEIGHBOUR_SOURCES = ("pixels", "hog_pixels")
#: "batch": each query's negatives are the other positives of the batch (n − 1);
#: "both_views": SimCLR's 2n − 2 (the other queries too)
NEGATIVES = ("batch", "both_views")

# SimCLR's classic recipe, scaled to 28-pixel images: strong crops, rotation, exposure, erasing
STRONG_AUGMENT: dict[str, Any] = dict(
    crop_scale=(0.3, 1.0),
    ratio=(0.75, 1.333),
    flip=0.5,
    rotate=10.0,
    translate=0.0,
    brightness=0.3,
    contrast=0.3,
    erase=0.3,
    erase_scale=(0.02, 0.15),
    fill=None,
)
# mild: crops keep 70-100 % of the image, +-5 degrees, a little exposure change, no erasing
LIGHT_AUGMENT: dict[str, Any] = dict(
    crop_scale=(0.7, 1.0),
    ratio=(0.85, 1.18),
    flip=0.5,
    rotate=5.0,
    translate=0.0,
    brightness=0.1,
    contrast=0.1,
    erase=0.0,
    erase_scale=(0.02, 0.1),
    fill=None,
)
# what self-supervised training uses: on these small centred products the mild views gave
# the better self-supervised models in development trials (notebook 03, section 7, measures it)
SSL_AUGMENT = LIGHT_AUGMENT


class TrainingError(RuntimeError):
    """Training could not run (no click pairs, unknown source, ...)."""


@dataclass
class TrainConfig:
    """Everything that determines a trained model (its hash decides reuse)."""

    positives: str = "self_supervised"
    backbone: str = "cnn"
    arch: dict[str, Any] = field(default_factory=dict)  # overrides of models.default_arch(backbone)
    epochs: float | None = None
    minutes: float | None = None
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    temperature: float = 0.1
    projection_dim: int | None = None  # projection head size (None: no head)
    augment: dict[str, Any] | None = None  # BatchAugment fields; None: no augmentation
    n_train: int | None = None  # use only the first n training images (smoke)
    seed: int = 0
    negatives: str = "batch"  # one of NEGATIVES
    # self_supervised only — positives mined from nearest neighbours, still without labels:
    neighbours: str | None = None  # None: the view's own image; else a NEIGHBOUR_SOURCES entry
    neighbour_k: int = 5  # a neighbour positive is drawn from the image's k nearest neighbours
    neighbour_prob: float = 0.5  # share of pairs whose positive is a neighbour (the rest: the image itself)
    eval_queries: int | None = None  # None: the full protocol after training; 0: none
    checkpoint_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.positives not in POSITIVES:
            raise ValueError(f"positives must be one of {POSITIVES}, got {self.positives!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.epochs is None and self.minutes is None:
            raise ValueError("give epochs or minutes (or both: whichever is reached first)")
        if self.neighbours not in (None, *NEIGHBOUR_SOURCES):
            raise ValueError(f"neighbours must be None or one of {NEIGHBOUR_SOURCES}, got {self.neighbours!r}")
        if self.neighbours and self.positives != "self_supervised":
            raise ValueError("neighbour positives are a self_supervised option")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the configuration (the reuse key stored in the model's metadata).

        ``checkpoint_seconds`` is left out: how often a run saves does not change the model.
        """
        d = self.to_dict()
        d.pop("checkpoint_seconds")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def full_arch(self) -> dict[str, Any]:
        """The network's architecture: the backbone's default with ``arch``'s overrides."""
        return default_arch(self.backbone, **self.arch)


def default_config(positives: str, profile: str = "full", backbone: str = "cnn") -> TrainConfig:
    """The configuration ``make report`` trains (full) or the tests use (smoke, seconds).

    Full budgets are "epochs or minutes, whichever comes first": on a quiet 2-core machine
    the minutes bind (self-supervised 14, the others 4.5), so ``make report`` stays within
    its hour; the epochs cap keeps a faster machine from training needlessly long.
    """
    if profile not in paths.PROFILES:
        raise ValueError(f"profile must be one of {paths.PROFILES}, got {profile!r}")
    smoke = profile == "smoke"
    if backbone == "efficientnet":
        # ImageNet-initialised trunk, fine-tuned with label positives at 32x32 RGB
        c = TrainConfig(
            positives=positives,
            backbone="efficientnet",
            arch={"image_size": 32, "dim": 128},
            epochs=3,
            minutes=4.5,
            batch_size=128,
            lr=1e-3,
            temperature=0.1,
            augment=LIGHT_AUGMENT,
        )
        if smoke:
            c.minutes, c.epochs, c.n_train, c.eval_queries = None, 1, 512, 0
        return c
    if positives == "self_supervised":
        # SimCLR views, and for 90 % of the pairs the positive is a view of one of the image's
        # 5 nearest neighbours by PCA of its pixels joined with HOG edges (no labels); notebook
        # 03, section 7, compares these choices
        c = TrainConfig(
            positives=positives,
            backbone=backbone,
            epochs=40,
            minutes=14.0,
            batch_size=256,
            lr=2e-3,
            temperature=0.1,
            projection_dim=128,
            augment=SSL_AUGMENT,
            negatives="both_views",
            neighbours="hog_pixels",
            neighbour_k=5,
            neighbour_prob=0.9,
        )
    elif positives == "labels":
        # no augmentation, and two convolutions per block: both did better in development trials
        # (the one-convolution network drove its training loss near 0 and stopped improving)
        c = TrainConfig(
            positives=positives,
            backbone=backbone,
            arch={"convs": 2},
            epochs=15,
            minutes=4.5,
            batch_size=256,
            lr=3e-3,
            weight_decay=5e-4,
            temperature=0.1,
            augment=None,
        )
    elif positives == "clicks":  # ~23k click pairs: an epoch is short
        c = TrainConfig(
            positives=positives,
            backbone=backbone,
            epochs=40,
            minutes=4.5,
            batch_size=256,
            lr=2e-3,
            temperature=0.1,
            augment=LIGHT_AUGMENT,
        )
    else:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if smoke:
        c.minutes, c.epochs, c.n_train, c.eval_queries = None, 2, 3000, 0
    return c
