"""Contrastive training of an encoder, from three sources of positives.

Each training example is a query image, one positive image and n − 1 negatives; the label
is the index of the positive among the n candidates.  The loss (:func:`contrastive_loss`):

    similarities s_j = cos(query, candidate_j) / temperature,   j = 1..n
    p = softmax(s);   loss = −log p[label]          (cross-entropy against the positive)

In a batch of n (query, positive) pairs the candidates of query i are the n positives of
the batch: its own positive is candidate i, the other n − 1 are its negatives ("in-batch
negatives").  Where the positives come from is the ``positives`` choice:

- ``self_supervised``: two random augmentations of the same image (SimCLR); a projection
  head is trained on top of the embedding and thrown away afterwards.  With
  ``neighbours="hog_pixels"`` (the default configuration) most positives are instead a
  view of one of the image's nearest neighbours by PCA of its pixels joined with HOG edge
  features (:func:`neighbour_features`, :func:`mine_neighbours`): a *different*
  look-alike image, found without labels (in the spirit of NNCLR);
- ``labels``: another training image of the same class (class labels stand in for human
  raters); candidates of the same class as the query are masked out of the softmax, so an
  image is never pushed away from its own class;
- ``clicks``: an image a user clicked when shown it for this query (the ``interactions``
  table, ``type = 'click'``, training images only).

Training runs for a number of epochs or of wall-clock minutes (the learning rate follows
a cosine schedule over the fraction of the budget used), seeded, with a tqdm bar; the
loss curve is stored in the model's metadata, and a checkpoint is written every
``checkpoint_seconds`` so an interrupted run resumes where it stopped.

``ensure_model(positives, profile)`` is what the notebooks and ``make report`` call: it
trains only when the model file is missing or was trained with another configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import config
from .features import BatchAugment, Preprocess
from .models import Encoder, auto_threads, build_network, default_arch, default_preprocess

POSITIVES = ("self_supervised", "labels", "clicks")
BACKBONES = ("cnn", "resnet", "efficientnet")

CLI_HELP = "train a contrastive encoder (positives: self_supervised, labels, clicks)"


class TrainingError(RuntimeError):
    """Training could not run (no click pairs, unknown source, ...)."""


# --------------------------------------------------------------------------- the loss
def contrastive_loss(queries: torch.Tensor, candidates: torch.Tensor, temperature: float = 0.1,
                     labels: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of the softmax over query–candidate similarities.

    ``queries`` (n, d) and ``candidates`` (m, d), both L2-normalised; ``labels`` (n,) the
    index of each query's positive among the candidates (default ``arange(n)``: the
    positive of query i is candidate i); ``mask`` (n, m) bool, True where a candidate must
    be left out of query i's softmax (e.g. another image of the same class).  Written out
    step by step, as SPEC.md states it.
    """
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"expected (n, d) queries and (m, d) candidates, got {tuple(queries.shape)} and {tuple(candidates.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = queries.shape[0]
    if labels is None:
        labels = torch.arange(n, device=queries.device)
    similarities = queries @ candidates.T                      # (n, m) cosine similarities
    logits = similarities / temperature                        # sharpened by the temperature
    if mask is not None:
        keep_positive = F.one_hot(labels, candidates.shape[0]).bool()
        logits = logits.masked_fill(mask & ~keep_positive, float("-inf"))
    log_softmax = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -log_softmax[torch.arange(n, device=queries.device), labels].mean()


def symmetric_loss(a: torch.Tensor, b: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average of the loss with ``a`` as queries (candidates ``b``) and the reverse."""
    mt = mask.T if mask is not None else None
    return 0.5 * (contrastive_loss(a, b, temperature, mask=mask) + contrastive_loss(b, a, temperature, mask=mt))


def both_views_loss(a: torch.Tensor, b: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2n images is a query whose candidates are the other
    2n − 1 (its positive + 2n − 2 negatives); the image itself is masked out.

    ``mask``: (n, n), applied to all four query/candidate blocks, or (2n, 2n) over
    ``cat([a, b])`` (e.g. True wherever two rows show the same training image)."""
    n = a.shape[0]
    z = torch.cat([a, b])
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    self_mask = torch.eye(2 * n, dtype=torch.bool)
    if mask is not None:
        self_mask = self_mask | (mask if mask.shape[0] == 2 * n else mask.repeat(2, 2))
    # the positive must stay: contrastive_loss never masks the label column
    return contrastive_loss(z, z, temperature, labels=labels, mask=self_mask)


# --------------------------------------------------------------------------- configuration
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
    threads: int = 0  # 0: auto (all cores, or 1 when the machine is already busy; see auto_threads)
    negatives: str = "batch"  # "both_views": SimCLR's 2n - 2 negatives (the other queries too)
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
        if self.negatives not in ("batch", "both_views"):
            raise ValueError(f"negatives must be 'batch' or 'both_views', got {self.negatives!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the configuration (the reuse key stored in the model's metadata)."""
        d = self.to_dict()
        d.pop("checkpoint_seconds")
        d.pop("threads")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def full_arch(self) -> dict[str, Any]:
        return default_arch(self.backbone, **self.arch)


# SimCLR's classic recipe, scaled to 28-pixel images: strong crops, rotation, exposure, erasing
STRONG_AUGMENT = dict(crop_scale=(0.3, 1.0), ratio=(0.75, 1.333), flip=0.5, rotate=10.0, translate=0.0,
                      brightness=0.3, contrast=0.3, erase=0.3, erase_scale=(0.02, 0.15), fill=None)
# mild: crops keep 70-100 % of the image, +-5 degrees, a little exposure change, no erasing
LIGHT_AUGMENT = dict(crop_scale=(0.7, 1.0), ratio=(0.85, 1.18), flip=0.5, rotate=5.0, translate=0.0,
                     brightness=0.1, contrast=0.1, erase=0.0, erase_scale=(0.02, 0.1), fill=None)
# what self-supervised training uses: the mild set measured better on these small centred
# products (4-epoch trials: P@1 0.816 vs 0.805 views-only; 0.859 vs 0.837 with mined neighbours)
SSL_AUGMENT = LIGHT_AUGMENT


def default_config(positives: str, profile: str = "full", backbone: str = "cnn") -> TrainConfig:
    """The configuration ``make report`` trains (full) or the tests use (smoke, seconds).

    Full budgets are "epochs or minutes, whichever comes first": on a quiet 2-core machine
    the minutes bind (self-supervised 14, the others 4.5), so ``make report`` stays within
    its hour; the epochs cap keeps a faster machine from training needlessly long.
    """
    if profile not in config.PROFILES:
        raise ValueError(f"profile must be one of {config.PROFILES}, got {profile!r}")
    smoke = profile == "smoke"
    if backbone == "efficientnet":
        # ImageNet-initialised trunk, fine-tuned with label positives at 32x32 RGB
        c = TrainConfig(positives=positives, backbone="efficientnet", arch={"image_size": 32, "dim": 128},
                        epochs=3, minutes=4.5, batch_size=128, lr=1e-3, temperature=0.1, augment=LIGHT_AUGMENT)
        if smoke:
            c.minutes, c.epochs, c.n_train, c.eval_queries = None, 1, 512, 0
        return c
    if positives == "self_supervised":
        # SimCLR views, and for 90 % of the pairs the positive is a view of one of the image's
        # 5 nearest neighbours by PCA of its pixels joined with HOG edges (no labels): 4-epoch
        # trials P@1 0.868 vs 0.858 with pixel-only neighbours; see notebook 03, section 7
        c = TrainConfig(positives=positives, backbone=backbone, epochs=40, minutes=14.0, batch_size=256, lr=2e-3,
                        temperature=0.1, projection_dim=128, augment=SSL_AUGMENT, negatives="both_views",
                        neighbours="hog_pixels", neighbour_k=5, neighbour_prob=0.9)
    elif positives == "labels":
        # no augmentation: in 3.5-epoch trials it raised MAP@R from 0.81 to 0.90; two convolutions
        # per block: the one-conv network plateaus near P@1 0.927 with its training loss near 0
        c = TrainConfig(positives=positives, backbone=backbone, arch={"convs": 2}, epochs=15, minutes=4.5,
                        batch_size=256, lr=3e-3, weight_decay=5e-4, temperature=0.1, augment=None)
    elif positives == "clicks":  # ~23k click pairs: an epoch is short
        c = TrainConfig(positives=positives, backbone=backbone, epochs=40, minutes=4.5, batch_size=256, lr=2e-3,
                        temperature=0.1, augment=LIGHT_AUGMENT)
    else:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if smoke:
        c.minutes, c.epochs, c.n_train, c.eval_queries = None, 2, 3000, 0
    return c


# --------------------------------------------------------------------------- positives
def click_pairs_from_db(conn=None, n_train: int = 60_000) -> np.ndarray:
    """(m, 2) int64 (query id, clicked id) pairs from the interactions table, both training images."""
    from . import data

    own = conn is None
    conn = conn or data.connect(readonly=True)
    try:
        rows = conn.execute(
            "SELECT query_image_id, displayed_image_id FROM interactions "
            "WHERE type = 'click' AND query_image_id < ? AND displayed_image_id < ? "
            "AND query_image_id != displayed_image_id", (n_train, n_train)).fetchall()
    finally:
        if own:
            conn.close()
    pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        raise TrainingError("no click pairs between training images in the interactions table; "
                            "build the database first (`python -m vs_lib data`)")
    return pairs


class _PairSampler:
    """Yields batches of (query indices, positive indices, mask) for one positive source."""

    def __init__(self, cfg: TrainConfig, labels: np.ndarray, n: int, rng: np.random.Generator,
                 click_pairs: np.ndarray | None = None):
        self.cfg, self.labels, self.n, self.rng = cfg, labels, n, rng
        if cfg.positives == "labels":
            self.by_class = [np.flatnonzero(labels[:n] == c) for c in range(int(labels.max()) + 1)]
        if cfg.positives == "clicks":
            assert click_pairs is not None
            self.pairs = click_pairs
        self.epoch_size = len(self.pairs) if cfg.positives == "clicks" else n
        self.neighbours: np.ndarray | None = None  # (n, k) for neighbour-mined self-supervised positives

    def epoch(self):
        bs = self.cfg.batch_size
        order = self.rng.permutation(self.epoch_size)
        for s in range(0, len(order) - bs + 1, bs):  # drop the last incomplete batch
            idx = order[s:s + bs]
            if self.cfg.positives == "self_supervised" and self.neighbours is None:
                yield idx, idx, None
            elif self.cfg.positives == "self_supervised":
                pos = idx.copy()
                use = self.rng.random(len(idx)) < self.cfg.neighbour_prob
                pos[use] = self.neighbours[idx[use], self.rng.integers(0, self.neighbours.shape[1], int(use.sum()))]
                ids = np.concatenate([idx, pos])  # the same image twice is never a negative of itself
                yield idx, pos, torch.from_numpy(ids[:, None] == ids[None, :])
            elif self.cfg.positives == "labels":
                lab = self.labels[idx]
                pos = np.empty_like(idx)
                for c in np.unique(lab):
                    sel = lab == c
                    pool = self.by_class[c]
                    pos[sel] = pool[self.rng.integers(0, len(pool), sel.sum())]
                mask = torch.from_numpy(lab[:, None] == lab[None, :])
                yield idx, pos, mask
            else:
                q, p = self.pairs[idx, 0], self.pairs[idx, 1]
                # the same image twice in a batch is not a negative of itself
                mask = torch.from_numpy((p[:, None] == p[None, :]) | (q[:, None] == q[None, :]))
                yield q, p, mask


# --------------------------------------------------------------------------- training
def _data_fingerprint(images: np.ndarray, labels: np.ndarray | None = None, extra: bytes = b"") -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels).tobytes())
    h.update(extra)
    return h.hexdigest()[:16]


NEIGHBOUR_SOURCES = ("pixels", "hog_pixels")


def neighbour_features(images: np.ndarray, source: str) -> np.ndarray:
    """Label-free features whose nearest neighbours serve as self-supervised positives.

    ``"pixels"``: PCA-128 of the pixels (L2-normalised); ``"hog_pixels"``: that joined with
    the top 64 principal components of HOG descriptors
    (:func:`vs_lib.features.hog_features`), each half L2-normalised, so a neighbour must
    look alike in both raw intensity and edge layout.  (PCA keeps the neighbour search
    cheap: 192 numbers per image instead of 1,424.)
    """
    from .models import baseline_encoder

    if source not in NEIGHBOUR_SOURCES:
        raise ValueError(f"source must be one of {NEIGHBOUR_SOURCES}, got {source!r}")
    pca = baseline_encoder("pca", train_images=images).embed(images)
    if source == "pixels":
        return pca
    from .features import hog_features

    hog = torch.from_numpy(hog_features(images)).double()
    hog -= hog.mean(0)
    _, vectors = torch.linalg.eigh(hog.T @ hog)  # principal axes, ascending variance
    top = hog @ vectors[:, -64:].flip(1)
    top = (top / top.norm(dim=1, keepdim=True).clamp_min(1e-12)).float().numpy()
    both = np.concatenate([pca, top], axis=1)
    return both / np.linalg.norm(both, axis=1, keepdims=True)


def mine_neighbours(embeddings: np.ndarray | torch.Tensor, k: int, chunk: int = 2048) -> np.ndarray:
    """(n, k) int64: each row's k most similar other rows (exact inner product, self excluded)."""
    E = np.ascontiguousarray(embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else embeddings,
                             dtype=np.float32)
    if not 1 <= k < len(E):
        raise ValueError(f"k must be in [1, {len(E) - 1}], got {k}")
    return nearest(E, E, k, chunk=chunk, exclude_self=True)


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    p = (progress - warmup) / max(1e-9, 1 - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def train_encoder(cfg: TrainConfig, images: np.ndarray | None = None, labels: np.ndarray | None = None,
                  click_pairs: np.ndarray | None = None, checkpoint: str | Path | None = None,
                  progress: bool = True, name: str | None = None,
                  callback: Callable[[dict], None] | None = None) -> Encoder:
    """Train an encoder by ``cfg``; returns it with ``metadata["history"]`` (the loss curve).

    ``images`` (n, 28, 28) uint8 and ``labels`` (n,) default to Fashion-MNIST's training
    set; ``click_pairs`` (m, 2) to the interactions table's clicks.  ``checkpoint``: a path
    where training state is saved every ``cfg.checkpoint_seconds`` and resumed from when
    it exists with the same configuration.
    """
    from tqdm.auto import tqdm

    if images is None or labels is None:
        from . import data

        ds = data.load_fashion_mnist()
        images, labels = ds.train_images, ds.train_labels
    images = np.asarray(images)
    labels = np.asarray(labels)
    n = min(len(images), cfg.n_train or len(images))
    if cfg.positives == "clicks":
        # every training image may appear in a click; n_train limits the number of pairs
        n = len(images)
        if click_pairs is None:
            click_pairs = click_pairs_from_db(n_train=n)
        click_pairs = np.asarray(click_pairs)[(np.asarray(click_pairs) < n).all(axis=1)]
        if cfg.n_train:
            click_pairs = click_pairs[: cfg.n_train]
        if len(click_pairs) < cfg.batch_size:
            raise TrainingError(f"only {len(click_pairs)} click pairs between training images; "
                                f"need at least one batch of {cfg.batch_size}")

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads if cfg.threads > 0 else auto_threads())
    try:
        config.set_seeds(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        arch = cfg.full_arch()
        network = build_network(arch)
        preprocess = default_preprocess(arch)
        if arch["kind"] != "efficientnet":
            from .features import fit_normalisation

            mean, std = fit_normalisation(images[:n])
            preprocess = Preprocess(size=preprocess.size, mode=preprocess.mode, mean=(mean,), std=(std,))
        head: nn.Module = nn.Identity()
        if cfg.projection_dim:
            d = arch.get("dim") or 1280
            head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True), nn.Linear(d, cfg.projection_dim))
        model = nn.ModuleDict({"net": network, "head": head})
        channels_last = arch["kind"] in ("cnn", "resnet", "efficientnet")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        # all training images preprocessed once: (n, C, H, W) float32
        x_all = preprocess(images[:n])
        aug_params = dict(cfg.augment) if cfg.augment else None
        if aug_params is not None:
            if aug_params.get("fill") is None:  # background = a black pixel after the z-score
                aug_params["fill"] = float((0.0 - preprocess.mean[0]) / preprocess.std[0])
            augment = BatchAugment(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug_params.items()})
        else:
            augment = None

        sampler = _PairSampler(cfg, labels, n, rng, click_pairs)
        steps_per_epoch = max(1, sampler.epoch_size // cfg.batch_size)
        total_steps = int(math.ceil(cfg.epochs * steps_per_epoch)) if cfg.epochs is not None else None
        budget = cfg.minutes * 60.0 if cfg.minutes is not None else None

        state = {"step": 0, "epoch": 0, "seconds": 0.0, "images": 0, "history": []}
        ckpt_path = Path(checkpoint) if checkpoint else None
        if ckpt_path is not None and ckpt_path.exists():
            try:
                ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
                if ck.get("config_key") == cfg.key():
                    model.load_state_dict(ck["model"])
                    opt.load_state_dict(ck["opt"])
                    state = ck["state"]
                    rng.bit_generator.state = ck["rng"]
                    gen.set_state(ck["gen"])
                    torch.set_rng_state(ck["torch_rng"])
            except Exception:  # an unreadable checkpoint is just ignored: start over
                state = {"step": 0, "epoch": 0, "seconds": 0.0, "images": 0, "history": []}

        mining: dict[str, Any] = {}
        if cfg.neighbours:
            # each training image's k nearest neighbours in a label-free feature space: a positive
            # that is a *different* image, found without labels.  The mining time counts as
            # training time (also on resume, where it is repeated: same data, same result).
            t_mine = time.perf_counter()
            sampler.neighbours = mine_neighbours(neighbour_features(images[:n], cfg.neighbours), cfg.neighbour_k)
            dt = time.perf_counter() - t_mine
            state["seconds"] += dt
            # reported only (labels never choose a positive): how often a neighbour shares the class
            same = float((labels[:n][sampler.neighbours] == labels[:n, None]).mean())
            mining = {"source": cfg.neighbours, "k": cfg.neighbour_k, "seconds": round(dt, 2), "same_class": round(same, 4)}

        def save_checkpoint() -> None:
            if ckpt_path is None:
                return
            with config.atomic_path(ckpt_path) as tmp:
                torch.save({"config_key": cfg.key(), "model": model.state_dict(), "opt": opt.state_dict(),
                            "state": state, "rng": rng.bit_generator.state, "gen": gen.get_state(),
                            "torch_rng": torch.get_rng_state()}, tmp)

        def progress_fraction() -> float:
            # epochs and/or minutes: whichever budget is used up first ends training
            fracs = []
            if total_steps is not None:
                fracs.append(state["step"] / total_steps)
            if budget is not None:
                fracs.append(state["seconds"] / budget)
            return max(fracs)

        bar = tqdm(total=100, disable=not progress, desc=f"train {cfg.positives}", unit="%",
                   initial=min(100, int(100 * progress_fraction())))
        model.train()
        last_ckpt = time.perf_counter()
        running, running_n = 0.0, 0
        log_every = max(1, min(50, steps_per_epoch // 4))
        done = progress_fraction() >= 1.0
        while not done:
            # a fresh permutation per epoch; resuming mid-epoch restarts that epoch's order
            for q_idx, p_idx, mask in sampler.epoch():
                t0 = time.perf_counter()
                frac = progress_fraction()
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * _lr_factor(frac, cfg.warmup_fraction)
                xq = x_all[torch.from_numpy(q_idx)]
                xp = x_all[torch.from_numpy(p_idx)]
                if augment is not None:
                    xq, xp = augment(xq, gen), augment(xp, gen)
                both = torch.cat([xq, xp])
                if channels_last:
                    both = both.contiguous(memory_format=torch.channels_last)
                z = model["head"](model["net"](both))
                z = F.normalize(z, dim=1)
                zq, zp = z[: len(q_idx)], z[len(q_idx):]
                if cfg.negatives == "both_views":
                    loss = both_views_loss(zq, zp, cfg.temperature, mask)
                else:
                    loss = symmetric_loss(zq, zp, cfg.temperature, mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                dt = time.perf_counter() - t0
                state["step"] += 1
                state["seconds"] += dt
                state["images"] += 2 * len(q_idx)
                running += float(loss.detach())
                running_n += 1
                if state["step"] % log_every == 0:
                    rec = {"step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 3),
                           "seconds": round(state["seconds"], 2), "loss": running / running_n,
                           "lr": opt.param_groups[0]["lr"]}
                    state["history"].append(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=f"{state['images'] / max(state['seconds'], 1e-9):.0f}")
                    running, running_n = 0.0, 0
                    if callback:
                        callback(rec)
                bar.n = min(100, int(100 * progress_fraction()))
                bar.refresh()
                if cfg.threads <= 0 and state["step"] % 100 == 0:
                    torch.set_num_threads(auto_threads())
                if time.perf_counter() - last_ckpt > cfg.checkpoint_seconds:
                    save_checkpoint()
                    last_ckpt = time.perf_counter()
                if progress_fraction() >= 1.0:
                    done = True
                    break
            else:
                state["epoch"] += 1
        if running_n:
            state["history"].append({"step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 3),
                                     "seconds": round(state["seconds"], 2), "loss": running / running_n,
                                     "lr": opt.param_groups[0]["lr"]})
        bar.close()
    finally:
        torch.set_num_threads(prev_threads)

    network = model["net"].to(memory_format=torch.contiguous_format).eval()
    enc_name = name or (cfg.positives if cfg.backbone == "cnn" else f"{cfg.backbone}_{cfg.positives}")
    extra = click_pairs.tobytes() if cfg.positives == "clicks" else b""
    meta = {
        "positives": cfg.positives,
        "config": cfg.to_dict(),
        "config_key": cfg.key(),
        "training_data": {"n_images": int(n), "fingerprint": _data_fingerprint(images[:n], labels[:n], extra),
                          "n_click_pairs": int(len(click_pairs)) if click_pairs is not None else None},
        "history": state["history"],
        "neighbour_mining": mining,
        "train_seconds": round(state["seconds"], 2),
        "train_steps": state["step"],
        "train_images_seen": state["images"],
        "train_images_per_second": round(state["images"] / max(state["seconds"], 1e-9), 1),
        "epochs": round(state["step"] / steps_per_epoch, 3),
        "torch": torch.__version__,
    }
    enc = Encoder(network, arch, preprocess, name=enc_name, metadata=meta)
    if ckpt_path is not None and ckpt_path.exists():
        ckpt_path.unlink()
    return enc


# --------------------------------------------------------------------------- evaluation
def protocol_metrics(encoder: Encoder, ds: Any = None, k: int = 10, chunk: int = 500,
                     gallery: tuple[np.ndarray, np.ndarray] | None = None,
                     queries: tuple[np.ndarray, np.ndarray] | None = None,
                     gallery_embeddings: np.ndarray | None = None,
                     query_embeddings: np.ndarray | None = None,
                     progress: bool = False) -> dict[str, float]:
    """The issue's protocol: gallery = training images, queries = test images, exact cosine.

    Returns P@1, P@10, mAP@10 (AP over the top 10 divided by min(10, relevant)) and MAP@R
    (pytorch-metric-learning's: R = number of relevant gallery items; the mean over the top
    R of precision@i at relevant positions, divided by R), plus embedding speed.
    ``gallery``/``queries``: (images, labels) to use instead of ``ds`` (Fashion-MNIST).
    """
    if gallery is None or queries is None:
        if ds is None:
            from . import data

            ds = data.load_fashion_mnist()
        gallery = gallery or (ds.train_images, ds.train_labels)
        queries = queries or (ds.test_images, ds.test_labels)
    g_img, g_lab = gallery
    q_img, q_lab = queries
    t = time.perf_counter()
    G = gallery_embeddings if gallery_embeddings is not None else encoder.embed(g_img, progress=progress)
    Q = query_embeddings if query_embeddings is not None else encoder.embed(q_img, progress=progress)
    embed_s = time.perf_counter() - t
    m = ranking_metrics(Q, np.asarray(q_lab), G, np.asarray(g_lab), k=k, chunk=chunk)
    m["embed_images_per_second"] = float((len(g_img) + len(q_img)) / max(embed_s, 1e-9)) \
        if gallery_embeddings is None and query_embeddings is None else float("nan")
    m["dim"] = int(G.shape[1])
    return m


def ranking_metrics(Q: np.ndarray, q_labels: np.ndarray, G: np.ndarray, g_labels: np.ndarray,
                    k: int = 10, chunk: int = 500) -> dict[str, float]:
    """P@1, P@k, mAP@k and MAP@R of exact inner-product search of ``Q`` in ``G``."""
    Gt = torch.from_numpy(np.ascontiguousarray(G, dtype=np.float32))
    g_lab = torch.from_numpy(np.array(g_labels, dtype=np.int64))
    counts = torch.bincount(g_lab, minlength=int(max(g_lab.max(), int(np.max(q_labels)))) + 1)
    r_all = counts[torch.from_numpy(np.array(q_labels, dtype=np.int64))]
    r_max = int(r_all.max())
    p1 = pk = apk = mapr = 0.0
    nq = len(Q)
    with torch.inference_mode():
        for s in range(0, nq, chunk):
            q = torch.from_numpy(np.ascontiguousarray(Q[s:s + chunk], dtype=np.float32))
            ql = torch.from_numpy(np.array(q_labels[s:s + chunk], dtype=np.int64))
            R = r_all[s:s + chunk]
            kk = min(max(r_max, k), Gt.shape[0])
            idx = torch.topk(q @ Gt.T, kk, dim=1, sorted=True).indices
            rel = (g_lab[idx] == ql[:, None]).float()  # (c, kk)
            ranks = torch.arange(1, kk + 1, dtype=torch.float32)
            prec_at = rel.cumsum(1) / ranks
            p1 += float(rel[:, 0].sum())
            pk += float(rel[:, :k].sum(1).div(k).sum())
            apk += float(((prec_at[:, :k] * rel[:, :k]).sum(1) / R.clamp(max=k).clamp(min=1)).sum())
            within = ranks[None, :] <= R[:, None].float()
            mapr += float(((prec_at * rel * within).sum(1) / R.clamp(min=1)).sum())
    return {"P@1": p1 / nq, f"P@{k}": pk / nq, f"mAP@{k}": apk / nq, "MAP@R": mapr / nq}


def nearest(Q: np.ndarray, G: np.ndarray, k: int = 10, chunk: int = 1000, exclude_self: bool = False) -> np.ndarray:
    """(n, k) indices into ``G`` of each query's k most similar rows (exact inner product).

    ``exclude_self``: ``Q`` is ``G`` (row i of ``Q`` is row i of ``G``), and a row is never
    its own neighbour."""
    if exclude_self and len(Q) != len(G):
        raise ValueError(f"exclude_self needs Q to be G, got {len(Q)} and {len(G)} rows")
    Gt = torch.from_numpy(np.ascontiguousarray(G, dtype=np.float32))
    out = np.empty((len(Q), min(k, len(G) - exclude_self)), dtype=np.int64)
    with torch.inference_mode():
        for s in range(0, len(Q), chunk):
            q = torch.from_numpy(np.ascontiguousarray(Q[s:s + chunk], dtype=np.float32))
            sims = q @ Gt.T
            if exclude_self:
                sims[torch.arange(len(q)), torch.arange(s, s + len(q))] = float("-inf")
            out[s:s + len(q)] = torch.topk(sims, out.shape[1], dim=1).indices.numpy()
    return out


# --------------------------------------------------------------------------- ensure
def model_path(positives: str, profile: str = "full", backbone: str = "cnn") -> Path:
    """Where :func:`ensure_model` keeps the model for ``positives`` / ``profile``."""
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if profile not in config.PROFILES:
        raise ValueError(f"profile must be one of {config.PROFILES}, got {profile!r}")
    base = config.models_dir() if profile == "full" else config.models_dir() / "smoke"
    stem = positives if backbone == "cnn" else ("efficientnet_finetuned" if (backbone, positives) == ("efficientnet", "labels")
                                                else f"{backbone}_{positives}")
    return base / f"{stem}.pt"


def _stored_key(path: Path) -> str | None:
    from .models import load_encoder

    try:
        return load_encoder(path).metadata.get("config_key")
    except Exception:
        return None


def ensure_model(positives: str, profile: str = "full", *, backbone: str = "cnn", force: bool = False,
                 cfg: TrainConfig | None = None, out: str | Path | None = None, progress: bool = True) -> Path:
    """Path of a trained model for ``positives``; trains only when missing or out of date.

    full → ``models_dir()/<positives>.pt``; smoke → ``models_dir()/smoke/<positives>.pt``;
    ``backbone="efficientnet"`` with label positives → ``efficientnet_finetuned.pt``.
    Reuse is decided by the configuration hash stored in the model's metadata.
    """
    cfg = cfg or default_config(positives, profile, backbone)
    path = Path(out) if out else model_path(positives, profile, backbone)
    if not force and path.exists() and _stored_key(path) == cfg.key():
        return path
    enc = train_encoder(cfg, checkpoint=path.with_name(path.name + ".ckpt"), progress=progress)
    if cfg.eval_queries is None:
        enc.metadata["evaluation"] = protocol_metrics(enc, progress=progress)
    enc.save(path)
    return path


# --------------------------------------------------------------------------- command line
def cli_add_arguments(parser) -> None:
    parser.add_argument("--positives", required=True, choices=POSITIVES, help="where positives come from")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="train for this many minutes of wall-clock time")
    budget.add_argument("--epochs", type=float, help="train for this many epochs")
    parser.add_argument("--out", type=Path, help="output file (default: data/models/<positives>.pt)")
    parser.add_argument("--profile", choices=config.PROFILES, default="full", help="full (default) or smoke (seconds)")
    parser.add_argument("--backbone", choices=BACKBONES, default="cnn", help="network (default: the small CNN)")
    parser.add_argument("--force", action="store_true", help="retrain even when an up-to-date model exists")
    parser.add_argument("--seed", type=int, default=0)


def cli_main(args) -> int:
    cfg = default_config(args.positives, args.profile, args.backbone)
    if args.minutes is not None:
        cfg.minutes, cfg.epochs = args.minutes, None
    elif args.epochs is not None:
        cfg.minutes, cfg.epochs = None, args.epochs
    cfg.seed = args.seed
    path = Path(args.out) if args.out else model_path(args.positives, args.profile, args.backbone)
    reused = not args.force and path.exists() and _stored_key(path) == cfg.key()
    path = ensure_model(args.positives, args.profile, backbone=args.backbone, force=args.force, cfg=cfg, out=path)
    from .models import load_encoder

    enc = load_encoder(path)
    m = enc.metadata
    print(f"{'reused' if reused else 'trained'} {path}")
    print(f"  {enc}")
    print(f"  {m.get('train_seconds')} s, {m.get('epochs')} epochs, {m.get('train_images_per_second')} img/s")
    if m.get("evaluation"):
        print("  " + ", ".join(f"{k} {v:.4f}" for k, v in m["evaluation"].items() if isinstance(v, float)))
    return 0
