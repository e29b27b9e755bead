"""``python -m vs_lib train --folder DIR --positives self_supervised``: adapt the photo encoder to a folder.

A user's folder has no labels, so the adaptation is self-supervised and contrastive — but
plain SimCLR (two augmented views of the same image) teaches a frozen ImageNet network
almost nothing on a few hundred images: the instance task is too easy.  What helps is a
*mined look-alike* as the positive: a view of one of the image's ``neighbours`` nearest
images under the frozen encoder (already in the folder's collection), so training pulls
together images that are probably of the same kind.  The recipe:

- only the 1x1 head convolution (320 → 1280 channels, 409,600 weights) trains; its
  BatchNorm stays frozen and there is no projection head (the loss acts on the embedding);
- the frozen trunk (stem and 16 blocks) runs once over ``views`` augmented views of every
  image at ``view_size`` pixels (white-padded square, random resized crop, flip, colour
  jitter, grayscale), and the 320-channel maps are kept in memory: a training step is
  then one small matrix product per view;
- loss: SimCLR's NT-Xent over the 2 x ``batch_size`` embeddings (:func:`both_views_loss`),
  temperature 0.2; AdamW, learning rate 3e-4 with a 10-step warm-up and cosine decay,
  600 steps.

The adapted encoder is the photo encoder with its head replaced: same preprocessing, same
1280-d output, its own fingerprint.  It is saved as ``<models_dir>/folders/<name>-adapted.pt``
with the hash of its configuration and of the folder's content, so a re-run with the same
folder reuses it (``--force`` retrains).  Index with it:
``python -m vs_lib index --folder DIR --model adapted``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..collection.store import adapted_model_path
from .losses import both_views_loss

__all__ = ["AdaptResult", "FolderAdaptConfig", "adapt_to_folder", "adapted_model_path", "folder_main", "smoke_config"]


@dataclass(frozen=True)
class FolderAdaptConfig:
    """Everything that decides an adapted encoder (its hash, with the folder's content, decides reuse)."""

    views: int = 6
    view_size: int = 160
    neighbours: int = 3
    temperature: float = 0.2
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    steps: int = 600
    warmup_steps: int = 10
    crop_scale: tuple[float, float] = (0.25, 1.0)
    jitter: float = 0.4
    gray_p: float = 0.2
    seed: int = 0

    def key(self, base_fingerprint: str, content: list[str]) -> str:
        """Hash of this configuration, the frozen encoder and the folder's file contents (sha256s)."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        h.update(base_fingerprint.encode())
        for sha in sorted(content):
            h.update(sha.encode())
        return h.hexdigest()[:16]


def smoke_config(seed: int = 0) -> FolderAdaptConfig:
    """A few seconds' worth: 2 views at 64 px, 15 steps (for tests and the smoke profile)."""
    return FolderAdaptConfig(views=2, view_size=64, steps=15, batch_size=16, seed=seed)


@dataclass
class AdaptResult:
    """The adapted encoder's ``path``, whether it was ``reused``, its training ``losses`` and ``seconds``."""

    path: Path
    reused: bool
    encoder: Any
    losses: list[float]
    seconds: float
    images: int


# --------------------------------------------------------------------------- views through the frozen trunk
def _augment(cfg: FolderAdaptConfig) -> Any:
    from torchvision.transforms import v2

    j = cfg.jitter
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                cfg.view_size, scale=cfg.crop_scale, ratio=(3 / 4, 4 / 3), interpolation=v2.InterpolationMode.BICUBIC
            ),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(j, j, j, 0.1)], p=0.8),
            v2.RandomGrayscale(p=cfg.gray_p),
        ]
    )


@torch.no_grad()
def view_maps(encoder: Any, images: list[Any], cfg: FolderAdaptConfig, progress: bool = True) -> torch.Tensor:
    """(n, views, 320, s, s) float16: the frozen trunk's maps of ``cfg.views`` augmented views per image.

    Views are drawn from torch's generator seeded with ``cfg.seed`` inside a forked RNG
    state, so the caller's random state is left as it was.
    """
    from tqdm.auto import tqdm

    from ..features import pad_to_square

    aug = _augment(cfg)
    pre = encoder.preprocess
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    squares = [pad_to_square(im.convert("RGB")) for im in images]
    jobs = [(i, v) for i in range(len(squares)) for v in range(cfg.views)]
    out: torch.Tensor | None = None
    net = encoder.network.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        for s in tqdm(
            range(0, len(jobs), 64), desc="views through the frozen trunk", unit="batch", disable=not progress
        ):
            chunk = jobs[s : s + 64]
            x = np.stack([np.asarray(aug(squares[i]), dtype=np.uint8) for i, _ in chunk])
            t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            maps = net.trunk(t).half().contiguous()
            if out is None:
                out = torch.empty((len(squares), cfg.views, *maps.shape[1:]), dtype=torch.float16)
            for (i, v), m in zip(chunk, maps, strict=True):
                out[i, v] = m
    assert out is not None
    return out


def _head_parts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stock head: 1x1 conv weight (1280, 320, 1, 1) and its frozen BatchNorm as scale and shift (1280,)."""
    from ..photo import lite0_network

    net: Any = lite0_network(pretrained=True)
    bn = net._bn1
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    shift = (bn.bias - bn.running_mean * scale).detach()
    return net._conv_head.weight.detach().clone(), scale, shift


def _lr_factor(step: int, cfg: FolderAdaptConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


def train_head(
    maps: torch.Tensor, neighbours: np.ndarray, cfg: FolderAdaptConfig, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Train the head on cached view maps; ``neighbours`` (n, >= cfg.neighbours) positions of each
    image's nearest others.  Returns the fused head ``(weight (1280, 320, 1, 1), bias (1280,))`` and the losses."""
    from tqdm.auto import tqdm

    weight0, scale, shift = _head_parts()
    weight = torch.nn.Parameter(weight0.clone())
    opt = torch.optim.AdamW([weight], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    rng = np.random.default_rng(cfg.seed)
    n, n_views = maps.shape[:2]
    b = min(cfg.batch_size, n)
    k = min(cfg.neighbours, neighbours.shape[1])
    losses = []
    for _ in tqdm(range(cfg.steps), desc="adapting the head", unit="step", disable=not progress):
        idx = rng.choice(n, size=b, replace=False)
        v1 = rng.integers(0, n_views, b)
        v2 = (v1 + rng.integers(1, n_views, b)) % n_views if n_views > 1 else v1
        pos = neighbours[idx, rng.integers(0, k, b)]
        x = torch.cat([maps[idx, v1], maps[pos, v2]]).float()
        h = F.conv2d(x, weight) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        z = F.normalize(F.relu6(h).mean(dim=(2, 3)), dim=1)
        loss = both_views_loss(z[:b], z[b:], cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    fused_weight = (weight.detach() * scale.view(-1, 1, 1, 1)).contiguous()
    return fused_weight, shift.clone(), losses


# --------------------------------------------------------------------------- the whole step
def adapt_to_folder(
    folder: str | os.PathLike[str],
    cfg: FolderAdaptConfig | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    out: str | os.PathLike[str] | None = None,
) -> AdaptResult:
    """The adapted encoder of ``folder`` (indexed first with the photo encoder, incrementally);
    trained only when missing, out of date (another configuration or folder content) or ``force``."""
    from ..collection.search import Collection
    from ..collection.sync import index_folder
    from ..index.exact import exact_topk
    from ..models import load_encoder
    from .registry import stored_reuse_key

    cfg = cfg or FolderAdaptConfig()
    t0 = time.perf_counter()
    sync = index_folder(folder, progress=progress)
    coll = Collection.open(name=sync.name)
    if len(coll) < 3:
        from ..collection.store import CollectionError

        raise CollectionError(f"adapting needs at least 3 images; {folder} has {len(coll)}")
    base = coll.encoder
    key = cfg.key(base.fingerprint, [r.sha256 for r in coll.state.records])
    path = Path(out) if out else adapted_model_path(folder)
    if not force and path.exists() and stored_reuse_key(path) == key:
        enc = load_encoder(path)
        return AdaptResult(path, True, enc, list(enc.metadata.get("losses", [])), time.perf_counter() - t0, len(coll))
    images = [coll.image(p) for p in coll.paths()]
    vectors = np.array(
        coll.state.vectors, dtype=np.float32
    )  # the frozen raw embeddings (a writable copy): mined look-alikes
    k = min(cfg.neighbours, len(coll) - 1)
    _, neighbours = exact_topk(vectors, vectors, k, exclude=np.arange(len(coll)))
    maps = view_maps(base, images, cfg, progress)
    t_views = time.perf_counter() - t0
    weight, bias, losses = train_head(maps, neighbours, cfg, progress)
    enc = base.copy()
    head = enc.network.net._conv_head
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    enc.weights_changed()
    enc.name = "adapted"
    enc.metadata = {
        **base.metadata,
        "reuse_key": key,  # configuration + base encoder + folder content: what a re-run compares
        "adapt_config": dataclasses.asdict(cfg),
        "base_fingerprint": base.fingerprint,
        "folder": str(coll.folder),
        "images": len(coll),
        "losses": losses,
        "views_seconds": t_views,
        "train_seconds": time.perf_counter() - t0 - t_views,
    }
    enc.save(path)
    return AdaptResult(path, False, enc, losses, time.perf_counter() - t0, len(coll))


def folder_main(args: argparse.Namespace) -> int:
    """``train --folder DIR --positives self_supervised`` (exit 2 on bad input)."""
    import sys

    from ..collection.store import CollectionError
    from ..models import torch_threads

    if args.positives != "self_supervised":
        print(
            f"error: a folder has no labels or clicks: use --positives self_supervised, not {args.positives}",
            file=sys.stderr,
        )
        return 2
    cfg = smoke_config(args.seed) if args.profile == "smoke" else FolderAdaptConfig(seed=args.seed)
    try:
        with torch_threads(args.threads or None):  # this process is ours
            result = adapt_to_folder(args.folder, cfg, force=args.force, out=args.out)
    except (CollectionError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'reused' if result.reused else 'trained'} {result.path}")
    print(f"  {result.encoder}")
    if result.losses:
        print(
            f"  {len(result.losses)} steps on {result.images} images, loss {result.losses[0]:.3f} → {result.losses[-1]:.3f}"
        )
    print(f"  index the folder with it: python -m vs_lib index --folder {args.folder} --model adapted")
    return 0
