"""Where positives come from: augmented views, labels, clicks, and mined neighbours.

A batch of training pairs is a :class:`Pairs`: row numbers of the query images, of their
positive images, and a mask of candidates the loss must ignore.  One sampler per source:

- :class:`ViewPositives` (``self_supervised``): the positive is the query image itself —
  training compares two random augmentations of it (SimCLR) — or, for a share of the pairs,
  one of its nearest neighbours in a label-free feature space (:func:`neighbour_features`,
  :func:`mine_neighbours`): a *different* look-alike image (in the spirit of NNCLR);
- :class:`LabelPositives` (``labels``): another training image of the same class (the
  labels stand in for human raters); same-class candidates are masked out of the softmax,
  so an image is never pushed away from its own class;
- :class:`ClickPositives` (``clicks``): an image a user clicked when shown it for this
  query (:func:`read_click_log`: the ``interactions`` table of a database, training images
  only, with a fingerprint that enters the model's reuse key).

:func:`epoch_pairs` cuts one epoch (a fresh random order) into batches of any sampler.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..features import fit_pca, hog_features
from ..index.exact import exact_topk
from .config import NEIGHBOUR_SOURCES, TrainConfig, TrainingError


@dataclass(frozen=True)
class Pairs:
    """One batch of (query, positive) pairs, as row numbers into the training images.

    ``queries``, ``positives``: (b,) int64; ``mask``: (b, b) or (2b, 2b) bool, True where a
    candidate must be left out of a query's softmax (None: keep every candidate).
    """

    queries: np.ndarray
    positives: np.ndarray
    mask: torch.Tensor | None


class PositiveSampler(Protocol):
    """A source of positives: ``pairs(batch, rng)`` turns ``epoch_size`` positions into pairs."""

    epoch_size: int

    def pairs(self, batch: np.ndarray, rng: np.random.Generator) -> Pairs: ...


def epoch_pairs(sampler: PositiveSampler, batch_size: int, rng: np.random.Generator) -> Iterator[Pairs]:
    """One epoch: a fresh permutation of the sampler's positions, in batches (the last partial one dropped)."""
    return pairs_in_order(sampler, rng.permutation(sampler.epoch_size), batch_size, rng)


def pairs_in_order(
    sampler: PositiveSampler, order: np.ndarray, batch_size: int, rng: np.random.Generator, start: int = 0
) -> Iterator[Pairs]:
    """The batches of one epoch's ``order`` of positions, from batch number ``start`` on (to resume)."""
    for s in range(start * batch_size, len(order) - batch_size + 1, batch_size):
        yield sampler.pairs(order[s : s + batch_size], rng)


def _same(ids: np.ndarray) -> torch.Tensor:
    """(b, b) bool: True where two entries are the same image (never a negative of itself)."""
    return torch.from_numpy(ids[:, None] == ids[None, :])


class ViewPositives:
    """Self-supervised positives: the image itself, or with ``neighbour_prob`` one of its neighbours.

    ``neighbours``: (n, k) int64 each image's k nearest neighbours (None: always the image).
    """

    def __init__(self, n: int, neighbours: np.ndarray | None = None, neighbour_prob: float = 0.5):
        self.epoch_size, self.neighbours, self.neighbour_prob = n, neighbours, neighbour_prob

    def pairs(self, batch: np.ndarray, rng: np.random.Generator) -> Pairs:
        if self.neighbours is None:
            return Pairs(batch, batch, None)
        positives = batch.copy()
        use = rng.random(len(batch)) < self.neighbour_prob
        choice = rng.integers(0, self.neighbours.shape[1], int(use.sum()))
        positives[use] = self.neighbours[batch[use], choice]
        # over cat([queries, positives]): the same image twice is never a negative of itself
        return Pairs(batch, positives, _same(np.concatenate([batch, positives])))


class LabelPositives:
    """Label positives: another image of the query's class; same-class candidates masked out."""

    def __init__(self, labels: np.ndarray):
        self.labels = np.asarray(labels)
        self.epoch_size = len(self.labels)
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(int(self.labels.max()) + 1)]

    def pairs(self, batch: np.ndarray, rng: np.random.Generator) -> Pairs:
        lab = self.labels[batch]
        positives = np.empty_like(batch)
        for c in np.unique(lab):
            sel = lab == c
            pool = self.by_class[c]
            positives[sel] = pool[rng.integers(0, len(pool), sel.sum())]
        return Pairs(batch, positives, _same(lab))


class ClickPositives:
    """Click positives: (query id, clicked id) pairs from the log; an epoch is one pass over them."""

    def __init__(self, click_pairs: np.ndarray):
        self.click_pairs = np.asarray(click_pairs, dtype=np.int64)
        self.epoch_size = len(self.click_pairs)

    def pairs(self, batch: np.ndarray, rng: np.random.Generator) -> Pairs:
        q, p = self.click_pairs[batch, 0], self.click_pairs[batch, 1]
        # the same image twice in a batch is not a negative of itself
        return Pairs(q, p, _same(p) | _same(q))


def make_sampler(
    cfg: TrainConfig, labels: np.ndarray, click_pairs: np.ndarray | None = None, neighbours: np.ndarray | None = None
) -> PositiveSampler:
    """The sampler of ``cfg.positives`` over the training images (``labels`` (n,), one per image)."""
    if cfg.positives == "self_supervised":
        return ViewPositives(len(labels), neighbours, cfg.neighbour_prob)
    if cfg.positives == "labels":
        return LabelPositives(labels)
    if click_pairs is None:
        raise TrainingError("click positives need click pairs (click_pairs_from_db)")
    return ClickPositives(click_pairs)


def click_pairs_from_db(conn: sqlite3.Connection | None = None, n_train: int = 60_000) -> np.ndarray:
    """(m, 2) int64 (query id, clicked id) pairs from the interactions table, both training images.

    In log order (the table's ``id``), so the same log always gives the same pairs in the
    same order.  ``conn`` defaults to the platform database (``config.db_path()``).
    """
    from .. import data

    own = conn is None
    db = conn or data.connect(readonly=True)
    try:
        rows = db.execute(
            "SELECT query_image_id, displayed_image_id FROM interactions "
            "WHERE type = 'click' AND query_image_id < ? AND displayed_image_id < ? "
            "AND query_image_id != displayed_image_id ORDER BY id",
            (n_train, n_train),
        ).fetchall()
    finally:
        if own:
            db.close()
    pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        raise TrainingError(
            "no click pairs between training images in the interactions table; "
            "build the database first (`python -m vs_lib data`)"
        )
    return pairs


def pairs_fingerprint(pairs: np.ndarray) -> str:
    """Hash of (m, 2) click pairs, order included: equal exactly when the pairs are."""
    a = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64))
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class ClickLog:
    """The clicks a model learns from, and where they were read.

    ``path``: the database whose ``interactions`` table holds the log; ``pairs``: (m, 2)
    int64 (query id, clicked id), training images only, in log order; ``fingerprint``: hash
    of the pairs (:func:`pairs_fingerprint`), so a changed log means a changed model.
    """

    path: str
    pairs: np.ndarray
    fingerprint: str

    def describe(self) -> str:
        return f"{len(self.pairs):,} click pairs from the interactions table of {self.path} (fingerprint {self.fingerprint})"


def read_click_log(path: str | Path | None = None, n_train: int = 60_000) -> ClickLog:
    """The click log of the database at ``path`` (default: the platform database, ``config.db_path()``)."""
    from .. import config, data

    db_path = Path(path) if path is not None else config.db_path()
    conn = data.connect(db_path, readonly=True)
    try:
        pairs = click_pairs_from_db(conn, n_train)
    finally:
        conn.close()
    return ClickLog(str(db_path), pairs, pairs_fingerprint(pairs))


# --------------------------------------------------------------------------- mined neighbours
def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbour_features(images: np.ndarray, source: str) -> np.ndarray:
    """(n, d) float32 L2-normalised label-free features whose nearest neighbours serve as positives.

    ``"pixels"``: PCA-128 of the z-scored pixels (the PCA baseline encoder);
    ``"hog_pixels"``: that joined with the top 64 principal components of HOG descriptors
    (:func:`vs_lib.features.hog_features`), each half L2-normalised, so a neighbour must
    look alike in both raw intensity and edge layout.  (PCA keeps the neighbour search
    cheap: 192 numbers per image instead of 1,424.)
    """
    from ..models import baseline_encoder

    if source not in NEIGHBOUR_SOURCES:
        raise ValueError(f"source must be one of {NEIGHBOUR_SOURCES}, got {source!r}")
    pixels = baseline_encoder("pca", train_images=images).embed(images)
    if source == "pixels":
        return pixels
    hog = hog_features(images)
    edges = _unit_rows(fit_pca(hog, 64).transform(hog))
    return _unit_rows(np.concatenate([pixels, edges], axis=1)).astype(np.float32)


def mine_neighbours(embeddings: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """(n, k) int64: each row's k most similar other rows (exact inner product, self excluded)."""
    e = np.asarray(embeddings, dtype=np.float32)
    if not 1 <= k < len(e):
        raise ValueError(f"k must be in [1, {len(e) - 1}], got {k}")
    _, positions = exact_topk(e, e, k, exclude=np.arange(len(e)), chunk=chunk)
    return positions


@dataclass(frozen=True)
class MiningReport:
    """How the neighbours of self-supervised training were mined (stored in the model's metadata).

    ``same_class``: share of mined neighbours with the image's class — labels are used only
    to report this, never to choose a positive.
    """

    source: str
    k: int
    seconds: float
    same_class: float


def mine_training_neighbours(
    images: np.ndarray, labels: np.ndarray, source: str, k: int
) -> tuple[np.ndarray, MiningReport]:
    """Each training image's ``k`` nearest neighbours in the ``source`` feature space, timed."""
    t0 = time.perf_counter()
    neighbours = mine_neighbours(neighbour_features(images, source), k)
    seconds = time.perf_counter() - t0
    same = float((labels[neighbours] == labels[:, None]).mean())
    return neighbours, MiningReport(source, k, round(seconds, 2), round(same, 4))
