"""What determines a trained model: :class:`TrainConfig`, and the course's defaults.

A configuration is plain data; its hash (:meth:`TrainConfig.key`), joined with the
fingerprint of the training data (images, labels, click log), is stored in every model file,
so a model is reused exactly when it was trained by the same configuration on the same data.
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
# what self-supervised training uses: on these small centred products the mild views make
# positives that still look alike (notebook 03, section 9, measures both)
SSL_AUGMENT = LIGHT_AUGMENT


class TrainingError(RuntimeError):
    """Training could not run (no click pairs, unknown source, ...)."""


#: torch threads during training.  Part of a model's identity: the thread count changes how
#: floating-point sums are split, hence the weights, so it is fixed (not chosen by the load)
TRAIN_THREADS = 2


@dataclass
class TrainConfig:
    """Everything that determines a trained model (its hash decides reuse).

    The budget is ``epochs`` (a float: 0.5 is half an epoch), never wall-clock time, so the
    same configuration trains the same model however busy the machine is; ``threads`` is
    fixed for the same reason (see :data:`TRAIN_THREADS`).
    """

    positives: str = "self_supervised"
    backbone: str = "cnn"
    arch: dict[str, Any] = field(default_factory=dict)  # overrides of models.default_arch(backbone)
    epochs: float = 1.0
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    temperature: float = 0.1
    projection_dim: int | None = None  # projection head size (None: no head)
    augment: dict[str, Any] | None = None  # BatchAugment fields; None: no augmentation
    n_train: int | None = None  # use only the first n training images (smoke); clicks: the first n pairs
    seed: int = 0
    threads: int = TRAIN_THREADS
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
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 (the training budget), got {self.epochs!r}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be a positive int, got {self.threads!r}")
        if self.neighbours not in (None, *NEIGHBOUR_SOURCES):
            raise ValueError(f"neighbours must be None or one of {NEIGHBOUR_SOURCES}, got {self.neighbours!r}")
        if self.neighbours and self.positives != "self_supervised":
            raise ValueError("neighbour positives are a self_supervised option")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The configuration a model's metadata records (``metadata["config"]``)."""
        return cls(**d)

    def key(self) -> str:
        """Hash of the configuration (part of the reuse key stored in the model's metadata).

        ``checkpoint_seconds`` is left out: how often a run saves does not change the model.
        """
        d = self.to_dict()
        d.pop("checkpoint_seconds")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def full_arch(self) -> dict[str, Any]:
        """The network's architecture: the backbone's default with ``arch``'s overrides."""
        return default_arch(self.backbone, **self.arch)


#: The full profile's training budgets, in epochs (passes over the training pairs): chosen
#: so that ``make models`` trains all four models in about 20 minutes on a quiet 2-core
#: machine (``benchmarks/quality.py`` reports each model's seconds and quality).
FULL_EPOCHS: dict[str, float] = {
    "self_supervised": 8.0,
    "labels": 2.0,
    "clicks": 20.0,
    "efficientnet": 1.0,
}
#: The smoke profile: 2 epochs on the first 3,000 training images (seconds; for tests)
SMOKE_EPOCHS, SMOKE_N_TRAIN = 2.0, 3000


def default_config(positives: str, profile: str = "full", backbone: str = "cnn") -> TrainConfig:
    """The configuration ``make models`` trains (full) or the tests use (smoke, seconds).

    Budgets are epochs (:data:`FULL_EPOCHS`), seeded, on :data:`TRAIN_THREADS` threads: the
    same configuration gives the same model on every run on the same machine.
    """
    if profile not in paths.PROFILES:
        raise ValueError(f"profile must be one of {paths.PROFILES}, got {profile!r}")
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    smoke = profile == "smoke"
    if backbone == "efficientnet":
        # ImageNet-initialised trunk, fine-tuned with label positives at 32x32 RGB
        c = TrainConfig(
            positives=positives,
            backbone="efficientnet",
            arch={"image_size": 32, "dim": 128},
            epochs=FULL_EPOCHS["efficientnet"],
            batch_size=128,
            lr=1e-3,
            temperature=0.1,
            augment=LIGHT_AUGMENT,
        )
        if smoke:
            c.epochs, c.n_train, c.eval_queries = 1.0, 512, 0
        return c
    if positives == "self_supervised":
        # SimCLR views, and for 90 % of the pairs the positive is a view of one of the image's
        # 5 nearest neighbours by PCA of its pixels joined with HOG edges (no labels);
        # notebook 03, section 9, measures what each of these choices brings
        c = TrainConfig(
            positives=positives,
            backbone=backbone,
            epochs=FULL_EPOCHS["self_supervised"],
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
        # no augmentation, and two convolutions per block: with label positives the
        # one-convolution network drives its training loss near 0 early and stops improving.
        # The smoke profile's two epochs end long before that, and one convolution trains and
        # embeds about three times faster
        c = TrainConfig(
            positives=positives,
            backbone=backbone,
            arch={} if smoke else {"convs": 2},
            epochs=FULL_EPOCHS["labels"],
            batch_size=256,
            lr=3e-3,
            weight_decay=5e-4,
            temperature=0.1,
            augment=None,
        )
    else:  # clicks: ~23k click pairs, so an epoch is short
        c = TrainConfig(
            positives=positives,
            backbone=backbone,
            epochs=FULL_EPOCHS["clicks"],
            batch_size=256,
            lr=2e-3,
            temperature=0.1,
            augment=LIGHT_AUGMENT,
        )
    if smoke:
        c.epochs, c.n_train, c.eval_queries = SMOKE_EPOCHS, SMOKE_N_TRAIN, 0
    return c
