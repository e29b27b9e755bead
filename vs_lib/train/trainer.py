"""The training loop, as small steps a notebook can call one by one.

Read it top to bottom::

    data = training_data(cfg)                 # images, labels, click pairs
    run = start_run(cfg, data)                # network + head, optimiser, sampler, seeds
    for pairs in epoch_pairs(run.sampler, cfg.batch_size, run.rng):
        views = make_batch(run, pairs)        # a random view of every query and positive image
        loss = train_step(run, pairs, views)  # batch_loss → backward → optimiser step
    encoder = finish(run)                     # the trained Encoder, with its metadata

:func:`make_batch` builds the batch (a random view of every query image and of every
positive image); :func:`train_step` sets the learning rate of the schedule
(:func:`set_learning_rate`), embeds the batch (:func:`embed_batch`), scores it with the
contrastive loss (:func:`batch_loss`, from :mod:`.losses`) and takes one optimiser step.
:func:`run_epoch` repeats it over one epoch, keeps the loss curve and checkpoints;
:func:`train_encoder` runs epochs until ``cfg.epochs`` are done, resuming from a checkpoint
when one exists.  ``epoch_pairs`` comes from :mod:`.positives`.

The budget is a number of steps (``cfg.epochs`` × steps per epoch), never wall-clock time,
and :func:`train_encoder` trains on ``cfg.threads`` threads (then restores the caller's
count): the thread count changes floating-point sums, so a fixed count makes the same
configuration give the same weights on every run.  The step functions themselves run on
whatever threads their caller set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from .. import config as paths
from ..features import BatchAugment, Preprocess, fit_normalisation
from ..models import Encoder, build_network, default_preprocess, torch_threads
from .config import TrainConfig, TrainingError
from .losses import pair_loss
from .positives import (
    ClickLog,
    MiningReport,
    Pairs,
    PositiveSampler,
    make_sampler,
    mine_training_neighbours,
    pairs_in_order,
    read_click_log,
)


# --------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class TrainingData:
    """What a run learns from: ``images`` (n, 28, 28) uint8, ``labels`` (n,), ``click_pairs`` (m, 2) or None.

    ``click_log``: where the click pairs were read (None when they were passed in or unused).
    """

    images: np.ndarray
    labels: np.ndarray
    click_pairs: np.ndarray | None = None
    click_log: ClickLog | None = None


def training_data(
    cfg: TrainConfig,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    click_pairs: np.ndarray | None = None,
    click_log: str | Path | None = None,
) -> TrainingData:
    """The training set of ``cfg``: Fashion-MNIST's training images unless given, cut to ``cfg.n_train``.

    With click positives every image may appear in a click, so the images are kept whole
    and ``n_train`` limits the number of click pairs instead.  The pairs are ``click_pairs``
    when given, else those of the interactions table of the database at ``click_log``
    (default: the platform database, ``config.db_path()``).
    """
    if images is None or labels is None:
        from .. import data

        ds = data.load_fashion_mnist()
        images, labels = ds.train_images, ds.train_labels
    images, labels = np.asarray(images), np.asarray(labels)
    if cfg.positives != "clicks":
        n = min(len(images), cfg.n_train or len(images))
        return TrainingData(images[:n], labels[:n])
    log = None
    if click_pairs is None:
        log = read_click_log(click_log, n_train=len(images))
        click_pairs = log.pairs
    pairs = np.asarray(click_pairs)
    pairs = pairs[(pairs < len(images)).all(axis=1)][: cfg.n_train or None]
    if len(pairs) < cfg.batch_size:
        raise TrainingError(
            f"only {len(pairs)} click pairs between training images; need at least one batch of {cfg.batch_size}"
        )
    return TrainingData(images, labels, pairs, log)


def data_fingerprint(data: TrainingData) -> str:
    """Hash of the training images, labels and click pairs: equal exactly when the data are."""
    h = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    if data.click_pairs is not None:
        h.update(np.ascontiguousarray(data.click_pairs, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def reuse_key(cfg: TrainConfig, data: TrainingData) -> str:
    """What a model file must record to be reused: the configuration's hash and the data's fingerprint."""
    return f"{cfg.key()}-{data_fingerprint(data)}"


# --------------------------------------------------------------------------- the run
class LossRecord(TypedDict):
    """One point of the loss curve: the mean loss of the steps since the previous point."""

    step: int
    epoch: float
    seconds: float
    loss: float
    lr: float


@dataclass
class Progress:
    """How far a run is: steps, full epochs, training seconds, images seen, and the loss curve."""

    step: int = 0
    epoch: int = 0
    seconds: float = 0.0
    images: int = 0
    history: list[LossRecord] = field(default_factory=list)
    running: list[float] = field(default_factory=list)  # losses since the last history point


@dataclass
class TrainingRun:
    """Everything a training run holds, so each step is a plain function of it.

    ``model``: ``{"net": the encoder's network, "head": projection head (or Identity)}``;
    ``inputs``: every training image preprocessed once, (n, C, H, W) float32;
    ``rng``: batch order and positive draws; ``generator``: augmentations;
    ``order``: the current epoch's order of the sampler's positions (None between epochs).
    """

    cfg: TrainConfig
    data: TrainingData
    model: nn.ModuleDict
    preprocess: Preprocess
    augment: BatchAugment | None
    optimizer: torch.optim.Optimizer
    sampler: PositiveSampler
    inputs: torch.Tensor
    rng: np.random.Generator
    generator: torch.Generator
    progress: Progress = field(default_factory=Progress)
    mining: MiningReport | None = None
    order: np.ndarray | None = None

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.sampler.epoch_size // self.cfg.batch_size)

    @property
    def planned_steps(self) -> int:
        """The budget in optimiser steps: ``cfg.epochs`` × steps per epoch, rounded up."""
        return max(1, math.ceil(self.cfg.epochs * self.steps_per_epoch))

    @property
    def channels_last(self) -> bool:
        return self.cfg.full_arch()["kind"] in ("cnn", "resnet", "efficientnet")

    def fraction_done(self) -> float:
        """Share of the budget used: steps taken / planned steps."""
        return self.progress.step / self.planned_steps


def lr_factor(fraction: float, warmup: float) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` of the budget, then cosine decay to 0."""
    if fraction < warmup:
        return max(fraction / warmup, 1e-3)
    p = (fraction - warmup) / max(1e-9, 1 - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def _fitted_preprocess(arch: dict[str, Any], images: np.ndarray) -> Preprocess:
    """The architecture's preprocessing; for the small networks, z-scored with these images' statistics."""
    preprocess = default_preprocess(arch)
    if arch["kind"] == "efficientnet":  # ImageNet convention, fixed
        return preprocess
    mean, std = fit_normalisation(images)
    return Preprocess(size=preprocess.size, mode=preprocess.mode, mean=(mean,), std=(std,))


def _augmentation(cfg: TrainConfig, preprocess: Preprocess) -> BatchAugment | None:
    """The views of ``cfg.augment`` (None: none), empty areas filled with the background's value."""
    if not cfg.augment:
        return None
    params: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.items()}
    if params.get("fill") is None:  # background = a black pixel after the z-score
        params["fill"] = float((0.0 - preprocess.mean[0]) / preprocess.std[0])
    return BatchAugment(**params)


def _projection_head(cfg: TrainConfig, dim: int) -> nn.Module:
    """MLP on top of the embedding during training, thrown away afterwards (SimCLR)."""
    if not cfg.projection_dim:
        return nn.Identity()
    return nn.Sequential(
        nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, cfg.projection_dim)
    )


def start_run(cfg: TrainConfig, data: TrainingData) -> TrainingRun:
    """Seeded network, head, optimiser, augmentation and sampler, ready for the first step."""
    paths.set_seeds(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    arch = cfg.full_arch()
    model = nn.ModuleDict({"net": build_network(arch), "head": _projection_head(cfg, arch.get("dim") or 1280)})
    if arch["kind"] in ("cnn", "resnet", "efficientnet"):  # much faster convolutions on CPU
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    preprocess = _fitted_preprocess(arch, data.images)
    neighbours, mining = None, None
    if cfg.neighbours:
        # a different look-alike image as the positive, found without labels
        neighbours, mining = mine_training_neighbours(data.images, data.labels, cfg.neighbours, cfg.neighbour_k)
    sampler = make_sampler(cfg, data.labels, data.click_pairs, neighbours)
    run = TrainingRun(
        cfg,
        data,
        model,
        preprocess,
        _augmentation(cfg, preprocess),
        optimizer,
        sampler,
        preprocess(data.images),
        rng,
        generator,
        mining=mining,
    )
    run.progress.seconds += mining.seconds if mining else 0.0  # mining counts as training time
    return run


# --------------------------------------------------------------------------- one step
def make_batch(run: TrainingRun, pairs: Pairs) -> torch.Tensor:
    """(2b, C, H, W): a random view of each query image, then of each positive image."""
    queries = run.inputs[torch.from_numpy(pairs.queries)]
    positives = run.inputs[torch.from_numpy(pairs.positives)]
    if run.augment is not None:
        queries, positives = run.augment(queries, run.generator), run.augment(positives, run.generator)
    batch = torch.cat([queries, positives])
    return batch.contiguous(memory_format=torch.channels_last) if run.channels_last else batch


def embed_batch(run: TrainingRun, batch: torch.Tensor) -> torch.Tensor:
    """(2b, d) unit rows: the network, then the projection head (if any), L2-normalised."""
    return F.normalize(run.model["head"](run.model["net"](batch)), dim=1)


def batch_loss(run: TrainingRun, batch: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """Embed the batch (:func:`embed_batch`) and score the pairs with the contrastive loss."""
    z = embed_batch(run, batch)
    b = len(pairs.queries)
    return pair_loss(z[:b], z[b:], run.cfg.temperature, run.cfg.negatives, pairs.mask)


def set_learning_rate(run: TrainingRun) -> float:
    """Set the optimiser's learning rate for the next step (:func:`lr_factor` of the budget used); returns it."""
    lr = run.cfg.lr * lr_factor(run.fraction_done(), run.cfg.warmup_fraction)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def train_step(run: TrainingRun, pairs: Pairs, views: torch.Tensor | None = None) -> float:
    """One optimiser step on one batch of pairs; returns its loss and advances ``run.progress``.

    ``views``: the batch of :func:`make_batch` for these pairs, when the caller already built
    it (to look at it); otherwise it is built here (and its time counts as training time).
    """
    t0 = time.perf_counter()
    set_learning_rate(run)
    run.model.train()
    loss = batch_loss(run, make_batch(run, pairs) if views is None else views, pairs)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    p = run.progress
    p.step += 1
    p.seconds += time.perf_counter() - t0
    p.images += 2 * len(pairs.queries)
    p.running.append(float(loss.detach()))
    return p.running[-1]


def log_loss(run: TrainingRun) -> LossRecord:
    """Close a point of the loss curve: the mean of the losses since the previous one."""
    p = run.progress
    record = LossRecord(
        step=p.step,
        epoch=round(p.step / run.steps_per_epoch, 3),
        seconds=round(p.seconds, 2),
        loss=float(np.mean(p.running)),
        lr=float(run.optimizer.param_groups[0]["lr"]),
    )
    p.history.append(record)
    p.running.clear()
    return record


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(run: TrainingRun, path: Path) -> None:
    """Everything needed to continue the run exactly (weights, optimiser, progress, random states), atomically."""
    state = {
        "reuse_key": reuse_key(run.cfg, run.data),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "progress": dataclasses.asdict(run.progress),
        "rng": run.rng.bit_generator.state,
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "order": None if run.order is None else torch.from_numpy(run.order),
    }
    with paths.atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume(run: TrainingRun, path: Path) -> bool:
    """Continue from the checkpoint at ``path`` if it exists and was written by the same configuration and data.

    An unreadable or foreign checkpoint is ignored (the run starts over); returns whether it resumed.
    """
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("reuse_key") != reuse_key(run.cfg, run.data):
            return False
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.progress = Progress(**state["progress"])
        run.rng.bit_generator.state = state["rng"]
        run.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        run.order = None if state["order"] is None else state["order"].numpy()
    except Exception:  # a truncated or foreign file: start over
        return False
    return True


@dataclass
class Checkpoints:
    """Where a run saves itself (None: nowhere) and how often, in seconds of wall-clock time."""

    path: Path | None
    every_seconds: float
    last: float = field(default_factory=time.perf_counter)

    def maybe_save(self, run: TrainingRun) -> None:
        if self.path is not None and time.perf_counter() - self.last > self.every_seconds:
            save_checkpoint(run, self.path)
            self.last = time.perf_counter()


# --------------------------------------------------------------------------- epochs and the whole run
def run_epoch(
    run: TrainingRun,
    checkpoints: Checkpoints | None = None,
    on_record: Callable[[LossRecord], None] | None = None,
    on_step: Callable[[TrainingRun], None] | None = None,
) -> bool:
    """One pass over a fresh random order of the pairs, stopping early when the budget is used.

    Adds a point to the loss curve every few steps (``on_record`` is called with it) and
    checkpoints on the way; a run resumed mid-epoch continues that epoch's order where it
    stopped.  Returns whether the budget is used up.
    """
    log_every = max(1, min(50, run.steps_per_epoch // 4))
    if run.order is None:
        run.order = run.rng.permutation(run.sampler.epoch_size)
    done_in_epoch = run.progress.step - run.progress.epoch * run.steps_per_epoch
    for pairs in pairs_in_order(run.sampler, run.order, run.cfg.batch_size, run.rng, start=done_in_epoch):
        train_step(run, pairs)
        if run.progress.step % log_every == 0:
            record = log_loss(run)
            if on_record is not None:
                on_record(record)
        if on_step is not None:
            on_step(run)
        if checkpoints is not None:
            checkpoints.maybe_save(run)
        if run.fraction_done() >= 1.0:
            return True
    run.progress.epoch += 1
    run.order = None
    return run.fraction_done() >= 1.0


def training_metadata(run: TrainingRun) -> dict[str, Any]:
    """What the model file records about its training (JSON values)."""
    p, cfg, data = run.progress, run.cfg, run.data
    n_pairs = None if data.click_pairs is None else len(data.click_pairs)
    log = data.click_log
    return {
        "positives": cfg.positives,
        "config": cfg.to_dict(),
        "config_key": cfg.key(),
        "reuse_key": reuse_key(cfg, data),
        "training_data": {
            "n_images": len(data.images),
            "fingerprint": data_fingerprint(data),
            "n_click_pairs": n_pairs,
            "click_log": None if log is None else {"path": log.path, "fingerprint": log.fingerprint},
        },
        "history": list(p.history),
        "neighbour_mining": dataclasses.asdict(run.mining) if run.mining else {},
        "train_seconds": round(p.seconds, 2),
        "train_steps": p.step,
        "train_images_seen": p.images,
        "train_images_per_second": round(p.images / max(p.seconds, 1e-9), 1),
        "epochs": round(p.step / run.steps_per_epoch, 3),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def finish(run: TrainingRun, name: str | None = None) -> Encoder:
    """The trained network (head dropped) as an :class:`~vs_lib.models.Encoder` with its metadata."""
    if run.progress.running:  # the last, partial point of the loss curve
        log_loss(run)
    network = run.model["net"].to(memory_format=torch.contiguous_format).eval()
    cfg = run.cfg
    default_name = cfg.positives if cfg.backbone == "cnn" else f"{cfg.backbone}_{cfg.positives}"
    return Encoder(network, cfg.full_arch(), run.preprocess, name=name or default_name, metadata=training_metadata(run))


def train_encoder(
    cfg: TrainConfig,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    click_pairs: np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    name: str | None = None,
    callback: Callable[[LossRecord], None] | None = None,
    *,
    data: TrainingData | None = None,
) -> Encoder:
    """Train an encoder by ``cfg`` on ``cfg.threads`` threads; returns it with ``metadata["history"]``.

    ``data`` (from :func:`training_data`) or else ``images`` (n, 28, 28) uint8 and ``labels``
    (n,), default Fashion-MNIST's training set, and ``click_pairs`` (m, 2), default the
    platform database's click log.  ``checkpoint``: a path where training state is saved
    every ``cfg.checkpoint_seconds`` and resumed from when it exists with the same
    configuration and data (deleted once training ends).  The caller's thread counts (torch
    and BLAS) are restored afterwards.
    """
    from tqdm.auto import tqdm

    data = data if data is not None else training_data(cfg, images, labels, click_pairs)
    with torch_threads(cfg.threads), threadpool_limits(limits=cfg.threads, user_api="blas"):
        run = start_run(cfg, data)
        path = Path(checkpoint) if checkpoint else None
        if path is not None:
            resume(run, path)
        bar = tqdm(total=run.planned_steps, disable=not progress, desc=f"train {cfg.positives}", unit="step")
        bar.update(min(run.progress.step, run.planned_steps))

        def show(run: TrainingRun) -> None:
            p = run.progress
            loss = f"{p.history[-1]['loss']:.3f}" if p.history else "-"
            # no forced refresh: tqdm then honours its minimum interval (TQDM_MININTERVAL in logs)
            bar.set_postfix(loss=loss, img_s=f"{p.images / max(p.seconds, 1e-9):.0f}", refresh=False)
            bar.update(min(p.step, run.planned_steps) - bar.n)

        checkpoints = Checkpoints(path, cfg.checkpoint_seconds)
        done = run.fraction_done() >= 1.0
        while not done:
            done = run_epoch(run, checkpoints, on_record=callback, on_step=show)
        bar.close()
        encoder = finish(run, name)
    if path is not None and path.exists():
        path.unlink()
    return encoder
